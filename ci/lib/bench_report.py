"""The benchmark report (used by bench.py; Python 3.11 stdlib only): medians, ratios and spreads
of the rounds, what bounds each missed target, and the report.md and gnuplot chart renderings.
Pure functions of the rounds' data, unit-tested in test_bench.py.
"""
from __future__ import annotations

import math
import statistics

SYSTEMS = ("native", "bochs", "accel", "stub", "qemu")
# What ci/bench runs without --systems: "accel" is the library's default backend (32-bit code on
# today's executor, 64-bit code on the stub executor); "stub" (everything on the stub executor,
# PLEX86_ACCEL_BACKEND=stub) is for comparing the two executors on 32-bit guests, on request.
DEFAULT_SYSTEMS = ("native", "bochs", "accel", "qemu")
EMULATED = ("bochs", "accel", "stub", "qemu")
ACCELERATED = ("accel", "stub")
LABELS = {"native": "host native", "bochs": "plain Bochs", "accel": "Bochs + plex86-accel",
          "stub": "plex86-accel, stub executor", "qemu": "QEMU TCG"}
QEMU = "qemu-system-i386"


def median(values) -> float | None:
    """Median of the values that are numbers (None and NaN are skipped); None if there are none."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
          and not math.isnan(v)]
    return statistics.median(xs) if xs else None


def ratio(a, b) -> float | None:
    """a / b, or None when either is missing or b is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def spread(runs: list[dict], system: str, what: str) -> tuple | None:
    """(min, max) over the runs of a system for a benchmark or "boot"; None without numbers."""
    xs = [r.get("boot_s") if what == "boot" else r["times"].get(what)
          for r in runs if r["system"] == system]
    xs = [x for x in xs if isinstance(x, (int, float))]
    return (min(xs), max(xs)) if xs else None


def round_ratios(runs: list[dict], num: str, den: str, what: str) -> list[float]:
    """num / den for a benchmark (or "boot") within each round that has both: on a noisy host
    the rounds pair what ran minutes apart, not the medians of whole columns."""
    def value(r):
        v = r.get("boot_s") if what == "boot" else r["times"].get(what)
        return v if isinstance(v, (int, float)) else None
    by_round: dict = {}
    for r in runs:
        if r["system"] in (num, den) and value(r) is not None:
            by_round.setdefault(r["round"], {})[r["system"]] = value(r)
    return [ratio(v[num], v[den]) for _, v in sorted(by_round.items())
            if num in v and den in v and v[den] > 0]


def bounds_notes(rep: dict) -> list[str]:
    """For each missed target, what bounds it, in numbers from this report (medians, spreads
    over the rounds, and the per-benchmark profile)."""
    notes = []
    prof = rep.get("profile") or {}
    for t in rep["targets"]:
        if t["status"] != "missed":
            continue
        n, d = t["numerator"], t["denominator"]
        what = n["what"]
        line = f"**{t['id']}** ({fmt_x(t['ratio'])} against ≤ {t['limit']:.2f}×):"
        sp_n, sp_d = spread(rep["runs"], n["system"], what), spread(rep["runs"], d["system"], what)
        if sp_n and sp_d:
            line += (f" {LABELS[n['system']]} ranged {fmt_s(sp_n[0])}–{fmt_s(sp_n[1])} s and "
                     f"{LABELS[d['system']]} {fmt_s(sp_d[0])}–{fmt_s(sp_d[1])} s over the rounds")
            if sp_n[0] <= sp_d[1] * t["limit"]:
                line += " (the ranges overlap within the target: more rounds would tell)"
            line += "."
        rr = round_ratios(rep["runs"], n["system"], d["system"], what)
        if len(rr) > 1:
            within = sum(1 for x in rr if x <= t["limit"])
            line += (f" Round by round the ratio was {min(rr):.2f}–{max(rr):.2f}× (median "
                     f"{statistics.median(rr):.2f}×), within the target in {within} of {len(rr)} rounds.")
        p = prof.get(what)
        if p:
            line += (f" Profile (one accelerated boot running only {what}): {fmt_s(p['wall_s'])} s, of which "
                     f"{fmt_s(p['native_s'])} s native, {fmt_s(p['overhead_s'])} s entering and leaving "
                     f"native code ({p['runs']} runs")
            if p["overhead_us_per_run"] is not None:
                line += f", {p['overhead_us_per_run']:.0f} µs each"
            line += (f"), {fmt_s(p['emulated_s'])} s emulated by Bochs (the guest kernel, devices, "
                     "user code not entered).")
            if d["system"] == "native" and d["value"]:
                excess = n["value"] - d["value"]
                line += (f" The {fmt_s(excess)} s above native are bounded below by the exits: "
                         f"{p['runs']} runs ended by timer events, system calls and faults, each "
                         "followed by Bochs emulating what caused it.")
            elif d["system"] == "bochs":
                share = p["native_s"] / p["wall_s"] if p["wall_s"] else 0
                line += (f" Native code is {share:.0%} of it: this benchmark's time is the guest "
                         "kernel, which Bochs emulates with or without acceleration; the "
                         "accelerated build adds its hook and notification calls at every CPL "
                         "change and TLB flush.")
        notes.append(line)
    return notes


def fmt_s(v) -> str:
    return "–" if v is None else f"{v:.3f}" if v < 1 else f"{v:.2f}"


def fmt_x(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def render_markdown(rep: dict) -> str:
    """report.md from the report.json dictionary."""
    systems, benchmarks, med = rep["systems"], rep["benchmarks"], rep["medians"]
    rat = rep["ratios"]
    cfg = rep.get("config", {})
    L = [f"# plex86-accel benchmarks ({cfg.get('kernel', '?')} kernel)", ""]
    order = " (the emulated systems in alternating order)" if cfg.get("order") == "alternate" else ""
    L.append(f"{cfg.get('runs', '?')} run(s) per system, interleaved{order}; started {cfg.get('started', '?')}"
             f" on {cfg.get('host', {}).get('cpu', 'this host')}. Medians of host wall-clock seconds "
             "per benchmark (between the program's @@BEGIN and @@END lines as seen by the host).")
    if "qemu" in systems:
        L.append(f"QEMU: `{cfg.get('qemu_command', QEMU)}`.")
    L.append("")
    head = "| benchmark |" + "".join(f" {LABELS[s]} (s) |" for s in systems)
    rule = "|---|" + "---:|" * len(systems)
    extra = []
    if "bochs" in systems and "accel" in systems:
        extra.append(("accel_speedup_vs_bochs", "accel speedup over plain Bochs"))
    if "native" in systems and "accel" in systems:
        extra.append(("accel_over_native", "accel / native"))
    if "qemu" in systems and "accel" in systems:
        extra.append(("qemu_over_accel", "accel speedup over QEMU (QEMU / accel)"))
    if "stub" in systems and "accel" in systems:
        extra.append(("stub_over_accel", "stub executor / today's executor"))
    if "stub" in systems and "native" in systems:
        extra.append(("stub_over_native", "stub / native"))
    head += "".join(f" {label} |" for _, label in extra)
    rule += "---:|" * len(extra)
    for title, group in benchmark_groups(rep):
        if title:
            L += [f"## {title}", ""]
        L += [head, rule]
        for b in group:
            row = f"| {b} |" + "".join(f" {fmt_s(med[s]['times'].get(b))} |" for s in systems)
            row += "".join(f" {fmt_x(rat[b].get(k))} |" for k, _ in extra)
            L.append(row)
        L.append("")
    L.pop()
    emu = [s for s in systems if s in EMULATED]
    if emu:
        L += ["", "Boot to init (host seconds from starting the emulator to the guest's `@@INIT` line), medians:", ""]
        L.append("| " + " | ".join(LABELS[s] for s in emu) + " |")
        L.append("|" + "---:|" * len(emu))
        L.append("| " + " | ".join(f"{fmt_s(med[s]['boot_s'])} s" for s in emu) + " |")
        if "bochs" in emu and "accel" in emu:
            L += ["", f"accel / plain Bochs boot: {fmt_x(rat['boot'].get('accel_over_bochs'))}"]
    L += ["", "## Targets", "", "| target | numbers (medians) | ratio | status |", "|---|---|---:|---|"]
    for t in rep["targets"]:
        n, d = t["numerator"], t["denominator"]
        nums = (f"{n['system']} {fmt_s(n['value'])} s / {d['system']} {fmt_s(d['value'])} s"
                if t["ratio"] is not None else "–")
        st = {"met": "met", "missed": "**missed**"}.get(t["status"], t["status"])
        L.append(f"| {t['target']} | {nums} | {fmt_x(t['ratio'])} | {st} |")
    prof = rep.get("profile") or {}
    if prof:
        L += ["", "## Where the accelerated time goes", "",
              "One accelerated boot per benchmark running only it, minus a boot running none "
              "(accelerator statistics, host seconds):", "",
              "| benchmark | wall | native | enter/exit | emulated | runs (/s) | µs per run | demand fills | top exits | top declines |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for b in rep["benchmarks"]:
            p = prof.get(b)
            if not p:
                continue
            kv = lambda xs: ", ".join(f"{k} {v}" for k, v in xs) or "–"
            rps = f" ({p['runs_per_s']:.0f})" if p["runs_per_s"] is not None else ""
            us = f"{p['overhead_us_per_run']:.0f}" if p["overhead_us_per_run"] is not None else "–"
            L.append(f"| {b} | {fmt_s(p['wall_s'])} | {fmt_s(p['native_s'])} | {fmt_s(p['overhead_s'])} | "
                     f"{fmt_s(p['emulated_s'])} | {p['runs']}{rps} | {us} | {p['fills']} | "
                     f"{kv(p['exits'])} | {kv(p['declines'])} |")
    notes = bounds_notes(rep)
    if notes:
        L += ["", "## What bounds the missed targets", ""] + [f"- {x}" for x in notes]
    L += ["", "## Correctness", ""]
    if rep["problems"]:
        L.append(f"**{len(rep['problems'])} problem(s)** (results differing from the native oracle, "
                 "or incomplete runs):")
        L.append("")
        L += [f"- {p}" for p in rep["problems"]]
    else:
        L.append("Every run completed and every benchmark result matched the native oracle "
                 f"({rep.get('oracle', 'native run')}).")
    L += ["", "## All runs (host seconds)", ""]
    L.append("| round | system | " + " | ".join(benchmarks) + " | boot | run wall |")
    L.append("|---:|---|" + "---:|" * (len(benchmarks) + 2))
    for r in rep["runs"]:
        L.append(f"| {r['round']} | {r['system']} | " + " | ".join(fmt_s(r["times"].get(b)) for b in benchmarks)
                 + f" | {fmt_s(r.get('boot_s'))} | {fmt_s(r.get('wall_s'))} |")
    charts = [c for c in (rep.get("chart_real"), rep.get("chart")) if c]
    if charts:
        L += ["", "Charts (log scale): " + ", ".join(f"`{c}`" for c in charts) + "."]
    return "\n".join(L) + "\n"


def micro_benchmarks(rep: dict) -> list[str]:
    """The suite's micro-benchmarks of a report (its benchmarks but the real workloads)."""
    return [b for b in rep["benchmarks"] if b not in (rep.get("workloads") or [])]


def benchmark_groups(rep: dict) -> list[tuple[str | None, list[str]]]:
    """The report's benchmarks as (title, names): the real workloads first, then the suite's
    micro-benchmarks; one untitled group when there is only one kind."""
    micro = micro_benchmarks(rep)
    real = [b for b in rep["benchmarks"] if b not in micro]
    if not real or not micro:
        return [(None, real or micro)]
    return [("Real workloads", real), ("Micro-benchmarks", micro)]


def gnuplot_data(rep: dict, benchmarks: list[str]) -> str:
    """Whitespace-separated table for gnuplot: benchmark, then one median per system ("NaN" if missing)."""
    lines = ["# bench " + " ".join(rep["systems"])]
    for b in benchmarks:
        vals = [rep["medians"][s]["times"].get(b) for s in rep["systems"]]
        lines.append(b + " " + " ".join("NaN" if v is None else f"{v:.6g}" for v in vals))
    return "\n".join(lines) + "\n"


def gnuplot_script(rep: dict, data_path: str, png_path: str, benchmarks: list[str],
                   title: str) -> str:
    """A clustered histogram of `benchmarks`' medians, one bar per system, titled `title`."""
    cols = len(rep["systems"])
    vals = [v for s in rep["systems"] for b, v in rep["medians"][s]["times"].items()
            if v and b in benchmarks]
    lo = 10 ** math.floor(math.log10(min(vals))) if vals else 0.01
    hi = 10 ** math.ceil(math.log10(max(vals))) if vals else 100
    colors = {"native": "#4daf4a", "bochs": "#e41a1c", "accel": "#377eb8", "stub": "#984ea3",
              "qemu": "#ff7f00"}
    plots = ", ".join(
        f"'{data_path}' using {i + 2}:xtic(1) title '{LABELS[s]}' lc rgb '{colors[s]}'"
        for i, s in enumerate(rep["systems"]))
    return "\n".join([
        "set terminal pngcairo size 1100,600 font 'Sans,11'",
        f"set output '{png_path}'",
        f"set title '{title}, {rep.get('config', {}).get('kernel', '')} kernel "
        f"(median of {rep.get('config', {}).get('runs', '?')} run(s); lower is better)'",
        "set style data histogram",
        "set style histogram cluster gap 1",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.9",
        "set logscale y",
        f"set yrange [{lo}:{hi}]",
        "set ylabel 'host wall-clock seconds (log scale)'",
        "set grid ytics mytics",
        "set key above horizontal",
        "set xtics nomirror",
        "set datafile missing 'NaN'",
        f"plot {plots}" if cols else "",
        "",
    ])


# ---------------------------------------------------------------------------
# runners
