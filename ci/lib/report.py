"""Prints the workload-suite benchmarks of several runs side by side, as a Markdown table.

Times are host wall-clock seconds per program, as measured by the runner on the host (guest clocks
under Bochs run on instruction counts, so they are shown separately).

    report.py --native N.json --plain P.json [--accel A.json]   one run of each, side by side
    report.py --bench REPORT.json                               ci/bench's report.json (what
        ci/demo prints): per benchmark and system the median of the rounds and their range,
        ratios of medians, every round, and the statistics of the last accelerated run
"""
import argparse
import json
import statistics
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def by_name(run):
    return {p["name"]: p for p in run.get("programs", [])}


def fmt_s(value):
    return "–" if value is None else f"{value:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def fmt_range(values):
    """"median (min–max)" of the numbers among values, "–" without any."""
    xs = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not xs:
        return "–"
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    if n == 1:
        return fmt_s(med)
    return f"{fmt_s(med)} ({fmt_s(xs[0])}–{fmt_s(xs[-1])})"


def bench_values(rep, system, what):
    """The per-round values of a system for a benchmark, or for "boot", from ci/bench's report."""
    return [r.get("boot_s") if what == "boot" else (r.get("times") or {}).get(what)
            for r in rep.get("runs", []) if r.get("system") == system]


def bench_median(rep, system, what):
    m = (rep.get("medians") or {}).get(system) or {}
    return m.get("boot_s") if what == "boot" else (m.get("times") or {}).get(what)


# accel / plain above this (on medians) is called out: the project's bound for the benchmarks
# that are the guest kernel's work (bench-syscall, bench-pagefault, bench-forkexec)
SLOWER_LIMIT = 1.05
# other processes keeping this many CPUs busy during a run are called out (on a 2-core VM one
# emulator run uses one CPU; other work on the second one slows it too, see docs/bench/first-run.md)
DISTURBED_CPUS = 0.25


def paired_ratios(rep, what):
    """accel / plain of each round in which both ran: the two runs of a round are adjacent in
    time, so a slow spell of the host (other tenants) that lasts a round weighs on both."""
    by_round = {}
    for r in rep.get("runs", []):
        v = r.get("boot_s") if what == "boot" else (r.get("times") or {}).get(what)
        by_round.setdefault(r.get("round"), {})[r.get("system")] = v
    return [x["accel"] / x["bochs"] for x in by_round.values()
            if x.get("accel") and x.get("bochs")]


def fmt_ratios(xs):
    """"median× (min–max)" of ratios, "–" without any."""
    if not xs:
        return "–"
    xs = sorted(xs)
    med = statistics.median(xs)
    return f"{med:.2f}×" if len(xs) == 1 else f"{med:.2f}× ({xs[0]:.2f}–{xs[-1]:.2f})"


def bench_table(rep):
    """The demo's table from ci/bench's report.json: median (min–max) of the rounds per
    benchmark and system, speedup over plain Bochs and accel / native as ratios of medians,
    accel / plain paired by round (median and range of the per-round ratios), then every
    round, and the benchmarks where the paired median is > 5% above plain. With QEMU TCG among
    the systems it gets a column and accel's speedup over it (QEMU / accel, of medians)."""
    systems = [s for s in ("native", "bochs", "accel", "qemu") if s in rep.get("systems", [])]
    labels = {"native": "host native (s)", "bochs": "plain Bochs (s)",
              "accel": "Bochs + plex86-accel (s)", "qemu": "QEMU TCG (s)"}
    cfg = rep.get("config") or {}
    n = {s: len([r for r in rep.get("runs", []) if r.get("system") == s]) for s in systems}
    order = (", the emulated systems in alternating order" if cfg.get("order") == "alternate"
             else "")
    rows = [f"{max(n.values(), default=0)} rounds, interleaved (each round runs every system "
            f"once{order}); {cfg.get('kernel', '?')} guest; host: "
            f"{(cfg.get('host') or {}).get('cpu', '?')}.",
            "Host wall-clock seconds: median of the rounds (min–max); speedup and accel / native "
            "are ratios of medians; accel / plain per round: median (min–max) of each round's "
            "ratio (a round's plain and accelerated runs are adjacent in time)."
            + (f" The rounds took {cfg['rounds_s']:.0f} s after the builds." if cfg.get("rounds_s") else ""), ""]
    head = "| benchmark |" + "".join(f" {labels[s]} |" for s in systems)
    rule = "|---|" + "---:|" * len(systems)
    both = "bochs" in systems and "accel" in systems
    if both:
        head += " speedup over plain Bochs | accel / plain per round |"
        rule += "---:|---:|"
    if "native" in systems and "accel" in systems:
        head += " accel / native |"
        rule += "---:|"
    with_qemu = "qemu" in systems and "accel" in systems
    if with_qemu:
        head += " speedup over QEMU |"
        rule += "---:|"
    rows += [head, rule]
    slower = []
    for what in list(rep.get("benchmarks", [])) + ["boot"]:
        name = "boot to init" if what == "boot" else what
        cells = ["–" if (s == "native" and what == "boot") else fmt_range(bench_values(rep, s, what))
                 for s in systems]
        row = f"| {name} |" + "".join(f" {c} |" for c in cells)
        a = bench_median(rep, "accel", what)
        if both:
            b = bench_median(rep, "bochs", what)
            paired = paired_ratios(rep, what)
            row += f" {ratio(b, a)} | {fmt_ratios(paired)} |"
            if paired and statistics.median(paired) > SLOWER_LIMIT:
                slower.append(f"{name} {fmt_ratios(paired)}")
        if "native" in systems and "accel" in systems:
            row += " – |" if what == "boot" else f" {ratio(a, bench_median(rep, 'native', what))} |"
        if with_qemu:
            row += f" {ratio(bench_median(rep, 'qemu', what), a)} |"
        rows.append(row)
    if both:
        rows += ["", "Accelerated more than 5% slower than plain Bochs (accel / plain per round, "
                 "median): "
                 + (", ".join(slower) if slower else "none") + "."]
    rows += ["", "Every round (host seconds; other work: CPUs kept busy by other processes on this "
             "machine during the run, on average; steal: CPU time the hypervisor gave to others):", "",
             "| round | system | " + " | ".join(rep.get("benchmarks", [])) + " | boot | other work | steal |",
             "|---:|---|" + "---:|" * (len(rep.get("benchmarks", [])) + 3)]
    disturbed = []
    for r in rep.get("runs", []):
        other, steal = r.get("other_cpus"), r.get("steal_share")
        rows.append(f"| {r.get('round')} | {r.get('system')} | "
                    + " | ".join(fmt_s((r.get("times") or {}).get(b)) for b in rep.get("benchmarks", []))
                    + f" | {fmt_s(r.get('boot_s'))} | {'–' if other is None else f'{other:.2f}'} | "
                    + f"{'–' if steal is None else f'{steal:.0%}'} |")
        if other is not None and other >= DISTURBED_CPUS:
            disturbed.append(f"round {r.get('round')} {r.get('system')} ({other:.2f} CPUs)")
    if disturbed:
        rows += ["", "Other work on this machine kept at least "
                 f"{DISTURBED_CPUS:.2f} CPUs busy during: " + ", ".join(disturbed)
                 + ". Those runs are slower than they would be alone (the medians are less affected)."]
    problems = rep.get("problems") or []
    rows.append("")
    if problems:
        rows.append(f"{len(problems)} problem(s): " + "; ".join(problems))
    else:
        rows.append("Every run completed and every benchmark result matched the host-native run.")
    return "\n".join(rows)


def stats_lines(stats, what="whole accelerated run, boot included"):
    """The accelerator statistics (accel-core's stats JSON) as Markdown list items."""
    exits = ", ".join(f"{k} {v}" for k, v in sorted(stats["exits"].items(), key=lambda kv: -kv[1]) if v)
    declines = ", ".join(f"{k} {v}" for k, v in stats["declines"].items() if v)
    return [f"Accelerator statistics ({what}):", "",
            f"- native time {stats['native_ns'] / 1e9:.2f} s of {stats['wall_ns'] / 1e9:.2f} s "
            f"({stats['native_share']:.1%}); {stats['runs']} native runs, {stats['calls']} calls, "
            f"{stats['demand_fills']} demand fills",
            f"- exits: {exits}",
            f"- declines: {declines or 'none'}",
            f"- MMU: {', '.join(f'{k} {v}' for k, v in stats['mmu'].items())}",
            f"- code pages: {', '.join(f'{k} {v}' for k, v in stats['code_pages'].items())}"]


def table(native, plain, accel=None):
    nat, pla = by_name(native), by_name(plain)
    acc = by_name(accel) if accel else {}
    names = [n for n in pla if n in nat and (not accel or n in acc)] or list(pla)
    head = "| benchmark | host native (s) | plain Bochs (s) |"
    rule = "|---|---:|---:|"
    if accel:
        head += " Bochs + plex86-accel (s) | speedup over plain Bochs | accel / native |"
        rule += "---:|---:|---:|"
    else:
        head += " plain Bochs / native |"
        rule += "---:|"
    rows = [head, rule]
    for name in names:
        nt = nat.get(name, {}).get("host_wall_s")
        pt = pla[name].get("host_wall_s")
        row = f"| {name} | {fmt_s(nt)} | {fmt_s(pt)} |"
        if accel:
            at = acc.get(name, {}).get("host_wall_s")
            row += f" {fmt_s(at)} | {ratio(pt, at)} | {ratio(at, nt)} |"
        else:
            row += f" {ratio(pt, nt)} |"
        rows.append(row)
    rows.append("")
    for label, run in (("plain Bochs", plain), ("Bochs + plex86-accel", accel)):
        if not run:
            continue
        boot = run.get("boot", {})
        rows.append(f"Boot to init, {label}: {fmt_s(boot.get('host_wall_s'))} s of host time "
                    f"({fmt_s(boot.get('guest_uptime_s'))} s of guest time); Bochs stopped by: "
                    f"{run.get('stop_reason', '?')}.")
    stats = (accel or {}).get("accel_stats")
    if stats:
        rows += [""] + stats_lines(stats)
    return "\n".join(rows)


def last_accel_stats(rep):
    """(round, statistics) of the last accelerated run of ci/bench's report that has them."""
    for r in reversed(rep.get("runs", [])):
        if r.get("system") != "accel" or not r.get("json"):
            continue
        try:
            stats = load(r["json"]).get("accel_stats")
        except (OSError, ValueError):
            continue
        if stats:
            return r.get("round"), stats
    return None, None


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--native", help="JSON written by ci/run-native")
    ap.add_argument("--plain", help="JSON written by ci/run-guest --accel off")
    ap.add_argument("--accel", help="JSON written by ci/run-guest --accel on")
    ap.add_argument("--bench", help="report.json written by ci/bench (instead of the three above)")
    args = ap.parse_args(argv)
    if args.bench:
        rep = load(args.bench)
        print(bench_table(rep))
        rnd, stats = last_accel_stats(rep)
        if stats:
            print("\n" + "\n".join(stats_lines(stats, f"the accelerated run of round {rnd}, boot included")))
        return 0
    if not (args.native and args.plain):
        ap.error("give --bench REPORT.json, or --native and --plain (and --accel)")
    print(table(load(args.native), load(args.plain), load(args.accel) if args.accel else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
