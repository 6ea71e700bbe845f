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


def table(native, plain):
    nat, pla = by_name(native), by_name(plain)
    names = [n for n in pla if n in nat] or list(pla)
    rows = ["| benchmark | host native (s) | plain Bochs (s) | plain Bochs / native | guest clock in Bochs (s) |",
            "|---|---:|---:|---:|---:|"]
    for name in names:
        n, p = nat.get(name, {}), pla[name]
        nt, pt = n.get("host_wall_s"), p.get("host_wall_s")
        ratio = f"{pt / nt:.1f}×" if nt and pt else "–"
        rows.append(f"| {name} | {fmt_s(nt)} | {fmt_s(pt)} | {ratio} | {fmt_s(p.get('guest_s'))} |")
    boot = plain.get("boot", {})
    rows.append("")
    rows.append(f"Boot to init in plain Bochs: {fmt_s(boot.get('host_wall_s'))} s of host time "
                f"({fmt_s(boot.get('guest_uptime_s'))} s of guest time); Bochs stopped by: "
                f"{plain.get('stop_reason', '?')}.")
    return "\n".join(rows)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--native", required=True, help="JSON written by ci/run-native")
    ap.add_argument("--plain", required=True, help="JSON written by ci/run-guest --accel off")
    args = ap.parse_args(argv)
    print(table(load(args.native), load(args.plain)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
