"""Prints the workload-suite benchmarks of several runs side by side, as a Markdown table.

Times are host wall-clock seconds per program, as measured by the runner on the host (guest clocks
under Bochs run on instruction counts, so they are shown separately).
"""
import argparse
import json
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
        exits = ", ".join(f"{k} {v}" for k, v in sorted(stats["exits"].items(), key=lambda kv: -kv[1]) if v)
        declines = ", ".join(f"{k} {v}" for k, v in stats["declines"].items() if v)
        rows += ["", "Accelerator statistics (whole accelerated run, boot included):", "",
                 f"- native time {stats['native_ns'] / 1e9:.2f} s of {stats['wall_ns'] / 1e9:.2f} s "
                 f"({stats['native_share']:.1%}); {stats['runs']} native runs, {stats['calls']} calls, "
                 f"{stats['demand_fills']} demand fills",
                 f"- exits: {exits}",
                 f"- declines: {declines or 'none'}",
                 f"- MMU: {', '.join(f'{k} {v}' for k, v in stats['mmu'].items())}",
                 f"- code pages: {', '.join(f'{k} {v}' for k, v in stats['code_pages'].items())}"]
    return "\n".join(rows)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--native", required=True, help="JSON written by ci/run-native")
    ap.add_argument("--plain", required=True, help="JSON written by ci/run-guest --accel off")
    ap.add_argument("--accel", help="JSON written by ci/run-guest --accel on")
    args = ap.parse_args(argv)
    print(table(load(args.native), load(args.plain), load(args.accel) if args.accel else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
