#!/usr/bin/env python3
"""Benchmarks of the workload suite on several systems (used by ci/bench; Python 3.11 stdlib only).

    ci/bench [--arch i386|amd64] [--runs N] [--kernel 686|686-pae|amd64]
             [--systems native,bochs,accel,qemu] [--out DIR] [--programs LIST] [--no-build]
             [--timeout SECONDS] [--order fixed|alternate] [--no-chart] [--no-profile]
             [--no-workloads]

Benchmarks: the real-workload set (tests/workloads/programs: a gcc compile, Perl, xz,
SQLite, built from Debian packages by ci/build-workloads and overlaid on the guest) first,
then the suite's micro-benchmarks (tests/guest/programs' benchmark lines); --no-workloads
leaves the real ones out, --programs picks from both.

Systems:
  native  ci/run-native (the guest's binaries on this host, the real workloads chrooted in their
          root; also the correctness oracle)
  bochs   ci/run-guest --accel off (plain Bochs)
  accel   ci/run-guest --accel on (Bochs + plex86-accel)
  qemu    qemu-system-i386 -accel tcg booting the same kernel, base initramfs and run spec
          (run_qemu below; the per-run ISO is made with guestrun.py's helpers)

--arch amd64 (default i386) benchmarks the 64-bit guest (ci/build-guest --arch amd64; kernel
amd64, the default there) and the x86-64 suite natively, with qemu-system-x86_64 as QEMU.

Runs are interleaved: round 1 runs every system once, then round 2, ...  With --order
alternate (what ci/demo uses) the emulated systems run in reverse order in even rounds
(round 1: native, bochs, accel; round 2: native, accel, bochs; ...), so that neither always
runs first after the build or right after the other.  Each run's JSON
goes to OUT/runs/, and OUT gets report.md, report.json, chart-real.png (the real workloads)
and chart.png (the micro-benchmarks; gnuplot).  Times are
host wall-clock seconds between a program's @@BEGIN and @@END lines as seen by the host;
boot is host seconds from starting the emulator to the guest's @@INIT line.

After the rounds (unless --no-profile), one accelerated boot running no program and one per
benchmark give each benchmark's own accelerator statistics: the report's "Where the
accelerated time goes" table and, for each missed target, what bounds it.

Exit status: 0 if every run completed and matched the native oracle, 1 otherwise (the
report is written first), 2 on usage/setup errors.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guestrun  # noqa: E402  (ci/lib/guestrun.py: ISO and run-initrd helpers)
from bench_report import (  # noqa: E402,F401  (re-exported for callers and tests)
    ACCELERATED, DEFAULT_SYSTEMS, EMULATED, LABELS, QEMU, SYSTEMS, bounds_notes, micro_benchmarks, fmt_s, fmt_x, gnuplot_data, gnuplot_script,
    median, ratio, render_markdown, round_ratios, spread)
import suite  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tests" / "guest" / "programs"
WORKLOADS_MANIFEST = ROOT / "tests" / "workloads" / "programs"  # the real-workload set

# QEMU settings (see run_qemu); the system emulator per guest arch
QEMU_BIN = {"i386": QEMU, "amd64": "qemu-system-x86_64"}
QEMU_CPU = "max"
QEMU_MEGS = 512  # the same as guestrun.MEGS


# ---------------------------------------------------------------------------
# pure parts (unit-tested in test_bench.py)


def manifest_benchmarks(text: str) -> list[str]:
    """Names of the manifest lines of kind "benchmark", in manifest order."""
    out = []
    for line in text.splitlines():
        f = line.split("#", 1)[0].split()
        if len(f) >= 3 and f[1] == "benchmark":
            out.append(f[0])
    return out


def bench_kernel(arch: str, kernel: str | None) -> str:
    """--kernel of ci/bench: as given (it must belong to the arch), else 686-pae for i386 and
    amd64 for amd64. Raises ValueError with a message."""
    if kernel is None and arch == "i386":
        return "686-pae"
    return guestrun.guest_kernel(arch, kernel)


def round_order(systems: list[str], rnd: int, order: str = "fixed") -> list[str]:
    """The systems in the order round rnd (1-based) runs them. "fixed": as given every round;
    "alternate": native first every round (short, and the oracle), the others as given in odd
    rounds and reversed in even ones."""
    if order == "fixed":
        return list(systems)
    if order != "alternate":
        raise ValueError(f"unknown order {order!r}")
    first = [s for s in systems if s == "native"]
    rest = [s for s in systems if s != "native"]
    return first + (rest if rnd % 2 == 1 else rest[::-1])


def parse_proc_stat(text: str) -> dict:
    """The aggregate "cpu" line of /proc/stat in clock ticks: busy (user, nice, system, irq,
    softirq), idle (idle, iowait) and steal (time the hypervisor gave to others)."""
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            v = [int(x) for x in f[1:9]] + [0] * max(0, 9 - len(f))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}
    raise ValueError("no cpu line in /proc/stat")


def other_load(before: dict, after: dict, own_cpu_s: float, wall_s: float, hz: int) -> dict:
    """What else the machine did during a run: CPUs kept busy by other processes (all busy
    time minus the run's own CPU time, per second of the run) and the share of CPU time the
    hypervisor took (steal). Both None when the run took no time."""
    if wall_s <= 0:
        return {"other_cpus": None, "steal_share": None}
    busy = (after["busy"] - before["busy"]) / hz
    total = sum(after[k] - before[k] for k in ("busy", "idle", "steal"))
    return {"other_cpus": max(busy - own_cpu_s, 0.0) / wall_s,
            "steal_share": (after["steal"] - before["steal"]) / total if total > 0 else None}


def summarize_run(system: str, rnd: int, data: dict | None, benchmarks: list[str]) -> dict:
    """The per-run record kept in report.json: host seconds per benchmark and boot time."""
    data = data or {}
    progs = {p.get("name"): p for p in data.get("programs", [])}
    rec = {"round": rnd, "system": system,
           "times": {b: (progs[b].get("host_wall_s") if b in progs else None) for b in benchmarks},
           "guest_times": {b: (progs[b].get("guest_s") if b in progs else None) for b in benchmarks},
           "boot_s": None, "stop_reason": data.get("stop_reason")}
    if system in EMULATED:
        rec["boot_s"] = (data.get("boot") or {}).get("host_wall_s")
    return rec


def compute_medians(runs: list[dict], systems: list[str], benchmarks: list[str]) -> dict:
    """{system: {"times": {bench: median}, "boot_s": median, "runs": n}} over runs (summarize_run records)."""
    out = {}
    for s in systems:
        rs = [r for r in runs if r["system"] == s]
        out[s] = {"runs": len(rs),
                  "times": {b: median(r["times"].get(b) for r in rs) for b in benchmarks},
                  "boot_s": median(r.get("boot_s") for r in rs) if s in EMULATED else None}
    return out


def compute_ratios(med: dict, benchmarks: list[str]) -> dict:
    """Per benchmark: accel speedup over plain Bochs (bochs/accel), accel/native, QEMU/accel
    (> 1: accel is faster than QEMU TCG); and the same for boot where it applies."""
    def t(sys_, b):
        return (med.get(sys_) or {}).get("times", {}).get(b)

    out = {}
    for b in benchmarks:
        out[b] = {"accel_speedup_vs_bochs": ratio(t("bochs", b), t("accel", b)),
                  "accel_over_native": ratio(t("accel", b), t("native", b)),
                  "qemu_over_accel": ratio(t("qemu", b), t("accel", b)),
                  "stub_over_accel": ratio(t("stub", b), t("accel", b)),
                  "stub_over_native": ratio(t("stub", b), t("native", b))}
    boot = {s: (med.get(s) or {}).get("boot_s") for s in EMULATED}
    out["boot"] = {"accel_speedup_vs_bochs": ratio(boot["bochs"], boot["accel"]),
                   "accel_over_bochs": ratio(boot["accel"], boot["bochs"]),
                   "qemu_over_accel": ratio(boot["qemu"], boot["accel"])}
    return out


# The targets: (id, description, numerator (system, benchmark|"boot"), denominator, limit, strict)
# met when numerator / denominator <= limit (< limit when strict).
TARGETS = [
    ("compute-native", "bench-compute within 1.10× of host native (accel / native ≤ 1.10)",
     ("accel", "bench-compute"), ("native", "bench-compute"), 1.10, False),
    ("compute-qemu", "bench-compute faster than QEMU TCG (accel / QEMU < 1)",
     ("accel", "bench-compute"), ("qemu", "bench-compute"), 1.0, True),
    ("syscall-bochs", "bench-syscall no slower than 1.05× plain Bochs (accel / Bochs ≤ 1.05)",
     ("accel", "bench-syscall"), ("bochs", "bench-syscall"), 1.05, False),
    ("pagefault-bochs", "bench-pagefault no slower than 1.05× plain Bochs (accel / Bochs ≤ 1.05)",
     ("accel", "bench-pagefault"), ("bochs", "bench-pagefault"), 1.05, False),
    ("forkexec-bochs", "bench-forkexec no slower than 1.05× plain Bochs (accel / Bochs ≤ 1.05)",
     ("accel", "bench-forkexec"), ("bochs", "bench-forkexec"), 1.05, False),
    ("boot-bochs", "boot to init no slower than 1.02× plain Bochs (accel / Bochs ≤ 1.02)",
     ("accel", "boot"), ("bochs", "boot"), 1.02, False),
]


def _med_value(med: dict, system: str, what: str):
    m = med.get(system)
    if not m:
        return None
    return m.get("boot_s") if what == "boot" else m.get("times", {}).get(what)


def evaluate_targets(med: dict) -> list[dict]:
    """Each target with its numbers and status "met", "missed" or "not evaluated"."""
    out = []
    for tid, desc, (ns, nw), (ds, dw), limit, strict in TARGETS:
        a, b = _med_value(med, ns, nw), _med_value(med, ds, dw)
        r = ratio(a, b)
        if r is None:
            status = "not evaluated"
        else:
            status = "met" if (r < limit if strict else r <= limit) else "missed"
        out.append({"id": tid, "target": desc, "numerator": {"system": ns, "what": nw, "value": a},
                    "denominator": {"system": ds, "what": dw, "value": b}, "ratio": r,
                    "limit": limit, "strict": strict, "status": status})
    return out


# Counters of the accelerator statistics (accel-core/src/stats.rs) that a profile subtracts.
STAT_COUNTERS = ("calls", "runs", "native_ns", "run_wall_ns", "demand_fills")


def stats_delta(bench_stats: dict, base_stats: dict) -> dict:
    """The accelerator statistics of a boot that ran one benchmark minus those of a boot that
    ran none: what the benchmark itself cost (boot and shutdown cancel out)."""
    out = {k: (bench_stats.get(k) or 0) - (base_stats.get(k) or 0) for k in STAT_COUNTERS}
    for group in ("exits", "declines"):
        b, a = bench_stats.get(group) or {}, base_stats.get(group) or {}
        out[group] = {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) - a.get(k, 0) > 0}
    return out


def time_split(wall_s: float, delta: dict) -> dict:
    """Where an accelerated benchmark's host time went: native guest code, entering and leaving
    it (library wall time of the runs minus their native time), and the rest, which Bochs spent
    emulating (the guest kernel, devices, user code it did not enter)."""
    native = max(delta.get("native_ns", 0), 0) / 1e9
    run_wall = max(delta.get("run_wall_ns", 0), 0) / 1e9
    runs = max(delta.get("runs", 0), 0)
    overhead = max(run_wall - native, 0.0)
    top = lambda d: sorted(((k, v) for k, v in (d or {}).items() if v > 0), key=lambda kv: -kv[1])[:3]
    return {"wall_s": wall_s, "native_s": native, "overhead_s": overhead,
            "emulated_s": max(wall_s - run_wall, 0.0), "runs": runs,
            "runs_per_s": runs / wall_s if wall_s > 0 else None,
            "overhead_us_per_run": overhead / runs * 1e6 if runs else None,
            "fills": max(delta.get("demand_fills", 0), 0),
            "exits": top(delta.get("exits")), "declines": top(delta.get("declines"))}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def arch_args(arch: str) -> list[str]:
    """The --arch option of ci/run-native and ci/run-guest (none for i386, as before --arch)."""
    return [] if arch == "i386" else ["--arch", arch]


def run_native(out_json: Path, programs: str, no_build: bool, arch: str = "i386",
               workloads: bool = False) -> dict | None:
    cmd = [str(ROOT / "ci" / "run-native"), *arch_args(arch), "--programs", programs,
           "--json", str(out_json), "--quiet"] + (["--workloads"] if workloads else [])
    if no_build:
        cmd.append("--no-build")
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    return _load(out_json)


def run_bochs(out_json: Path, kernel: str, accel: bool, programs: str, timeout: float,
              arch: str = "i386", backend: str | None = None, workloads: bool = False) -> dict | None:
    """One ci/run-guest boot; `backend`: the library's PLEX86_ACCEL_BACKEND (None: its default);
    `workloads`: the guest gets the real-workload set too (--workloads)."""
    cmd = [str(ROOT / "ci" / "run-guest"), *arch_args(arch), "--kernel", kernel,
           "--accel", "on" if accel else "off",
           "--programs", programs, "--no-build", "--timeout", str(timeout), "--json", str(out_json)]
    cmd += ["--workloads"] if workloads else []
    env = {k: v for k, v in os.environ.items() if k != "PLEX86_ACCEL_BACKEND"}
    if backend is not None:
        env["PLEX86_ACCEL_BACKEND"] = backend
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-2000:])
    return _load(out_json)


def _proc_stat() -> dict | None:
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def _load(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def qemu_command(iso: Path, serial: Path, arch: str = "i386") -> list[str]:
    return [QEMU_BIN[arch], "-accel", "tcg", "-cpu", QEMU_CPU, "-m", str(QEMU_MEGS),
            "-cdrom", str(iso), "-boot", "d", "-no-reboot",
            "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
            "-rtc", "base=2025-01-01T00:00:00"]


def qemu_append(cmdline: str) -> str:
    """The guest kernel command line for QEMU: target/guest/cmdline without tsc_early_khz=
    (that pins the TSC rate to Bochs's ips; QEMU's TSC runs at the host's rate)."""
    return " ".join(w for w in cmdline.split() if not w.startswith("tsc_early_khz="))


def run_qemu(out_json: Path, kernel: str, programs: str, timeout: float, arch: str = "i386",
             workloads: bool = False) -> dict:
    """Boots the guest under QEMU TCG (qemu-system-i386; amd64: qemu-system-x86_64) with the
    same kernel, base initramfs (and the workloads' one) and run spec (SUITE_ONLY=programs) as
    ci/run-guest, and writes run-guest's JSON shape."""
    g = guestrun.ARCHES[arch]["out"]
    base_img, vmlinuz = g / "iso" / "base.img", g / "iso" / f"vmlinuz-{kernel}"
    for p in (base_img, vmlinuz, g / "cmdline"):
        if not p.exists():
            raise SystemExit(f"bench: {p} is missing: run {' '.join(['ci/build-guest', *arch_args(arch)])}")
    append = qemu_append((g / "cmdline").read_text().strip())
    run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{kernel}-qemu-{os.getpid()}"
    rundir = guestrun.TARGET / "run" / run_id
    rundir.mkdir(parents=True)
    spec = ["# written by ci/bench (qemu)", "SUITE=1", f"SUITE_ONLY={shlex.quote(programs)}"]
    initrds = [("base.img", base_img)]
    if workloads:
        spec.append("WORKLOADS=1")
        initrds.append(("workloads.img", guestrun.workloads_img(arch)))
    run_img = rundir / "run.img"
    guestrun.build_run_img(run_img, "\n".join(spec) + "\n", None)
    iso = rundir / "guest.iso"
    guestrun.make_iso(iso, vmlinuz, initrds + [("run.img", run_img)], append,
                      rundir / "isolinux.cfg")
    serial = rundir / "serial.txt"
    serial.touch()
    cmd = qemu_command(iso, serial, arch)
    cap = guestrun.boot_and_capture(cmd, rundir, serial, rundir / "qemu.out", timeout)
    lines, rc, wall = cap["lines"], cap["rc"], cap["wall"]
    killed_for, panic_at, poweroff_at = cap["killed_for"], cap["panic_at"], cap["poweroff_at"]
    if killed_for:
        reason = killed_for
    elif panic_at is not None:
        reason = "kernel-panic"
    elif rc == 0 and poweroff_at is not None:
        reason = "poweroff"  # ACPI soft-off: QEMU exits with status 0
    else:
        reason = "qemu-error"
    parsed = guestrun.parse_suite(lines)
    init_line = next(((t, s[s.index("@@INIT"):]) for t, s in lines if "@@INIT" in s), None)
    uptime = guestrun.num(guestrun.kv(init_line[1].split()[1:]).get("uptime")) if init_line else None
    result = {
        "system": "qemu", "arch": arch, "kernel": kernel, "accel": "tcg", "qemu": cmd, "run_dir": str(rundir),
        "cmdline": append,
        "boot": {"guest_uptime_s": uptime if isinstance(uptime, (int, float)) else None,
                 "host_wall_s": round(init_line[0], 3) if init_line else None},
        "host_wall_s": round(wall, 3), "qemu_exit": rc, "stop_reason": reason,
        "complete": parsed["complete"], "failures": parsed["problems"],
        "suite": {"requested": True, "done": parsed["done"], "summary": parsed["summary"],
                  "problems": parsed["problems"]},
        "programs": parsed["programs"], "console": str(serial),
        "console_timestamped": str(rundir / "console-ts.txt"),
    }
    for p in result["programs"]:
        p["output_tail"] = p.pop("output", [])[-20:]
    if reason != "poweroff":
        result["qemu_out_tail"] = guestrun.tail(rundir / "qemu.out", 20)
    else:
        iso.unlink(missing_ok=True)
    Path(out_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_profile(out: Path, kernel: str, benchmarks: list[str], timeout: float,
                problems: list[str], arch: str = "i386", workloads: bool = False) -> dict:
    """One accelerated boot running no program, then one per benchmark: each benchmark's own
    accelerator statistics (time_split). Appends unusable runs to problems. With `workloads`
    every boot has the real-workload set's initramfs, so that the baseline boot is alike."""
    def boot(name: str, programs: str):
        path = out / "runs" / f"profile-{name}.json"
        path.unlink(missing_ok=True)
        t0 = time.monotonic()
        data = run_bochs(path, kernel, True, programs, timeout, arch, workloads=workloads)
        probs = run_problems("accel", data) + ([] if (data or {}).get("accel_stats") else ["no accel_stats"])
        problems.extend(f"profile {name}: {p}" for p in probs)
        log(f"profile {name}: {time.monotonic() - t0:.0f} s")
        return None if probs else data

    base = boot("none", "none")
    if base is None:
        return {}
    result = {}
    for b in benchmarks:
        data = boot(b, b)
        prog = next((p for p in (data or {}).get("programs", []) if p.get("name") == b), None)
        if data is None or prog is None or prog.get("host_wall_s") is None:
            continue
        result[b] = time_split(prog["host_wall_s"], stats_delta(data["accel_stats"], base["accel_stats"]))
    return result


def run_problems(system: str, data: dict | None) -> list[str]:
    """Why a run is not usable (beyond result mismatches)."""
    if data is None:
        return ["no JSON written"]
    out = []
    if system in EMULATED and data.get("stop_reason") != "poweroff":
        out.append(f"stop_reason={data.get('stop_reason')}")
    out += list(data.get("failures") or [])
    return out


# ---------------------------------------------------------------------------
# main


def ensure_tools(systems: list[str], chart: bool = True, arch: str = "i386") -> None:
    pkgs = ["gnuplot-nox"] if chart and not shutil.which("gnuplot") else []
    if "qemu" in systems and not shutil.which(QEMU_BIN[arch]):
        pkgs.append("qemu-system-x86")  # has both qemu-system-i386 and qemu-system-x86_64
    if pkgs:
        r = subprocess.run(["bash", "-c", f'source "{ROOT}/ci/lib/common.sh" && ensure_packages "$@"',
                            "ensure_packages", *pkgs], stdout=sys.stderr)
        if r.returncode != 0:
            raise SystemExit(2)
    if "qemu" in systems and not shutil.which(QEMU_BIN[arch]):
        raise SystemExit(f"bench: {QEMU_BIN[arch]} (the QEMU comparator of --arch {arch}) is not "
                         "installed and installing qemu-system-x86 did not provide it; install it, "
                         "or leave qemu out with --systems native,bochs,accel")


def build(systems: list[str], arch: str = "i386", workloads: bool = False) -> None:
    steps = []
    if "bochs" in systems:
        steps.append([str(ROOT / "ci" / "build-bochs"), "--variant", "plain"])
    if any(s in systems for s in ACCELERATED):
        steps.append([str(ROOT / "ci" / "build-bochs"), "--variant", "accel"])
        steps.append(["cargo", "build", "--release", "-q", "-p", "accel-core", "--lib"])
        steps.append(["cargo", "build", "--release", "-q", "-p", "plex86-executor"])
    # also builds the suite for ci/run-native
    steps.append(guestrun.build_guest_cmd(arch))
    if workloads:
        steps.append(guestrun.build_workloads_cmd(arch))
    for cmd in steps:
        log(" ".join(cmd[:1] + cmd[1:]).replace(str(ROOT) + "/", ""))
        r = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)
        if r.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed ({r.returncode})")


def draw_chart(rep: dict, out: Path, benchmarks: list[str], name: str, title: str) -> str | None:
    """A chart of the benchmarks' medians (gnuplot) as OUT/name; None if gnuplot failed."""
    stem = name.removesuffix(".png")
    data, script, png = out / f"{stem}.dat", out / f"{stem}.gp", out / name
    data.write_text(gnuplot_data(rep, benchmarks))
    script.write_text(gnuplot_script(rep, str(data), str(png), benchmarks, title))
    r = subprocess.run(["gnuplot", str(script)], stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr.strip()[-500:]}")
        return None
    return str(png)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ci/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--arch", choices=tuple(guestrun.ARCHES), default="i386",
                    help="guest architecture (default i386; amd64: the 64-bit guest, QEMU is qemu-system-x86_64)")
    ap.add_argument("--kernel", choices=guestrun.ALL_KERNELS,
                    help="kernel flavour (default: 686-pae for i386, amd64 for amd64)")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                    help=f"a subset of {','.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)}; "
                    "stub: the accelerator over the stub executor)")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench"))
    ap.add_argument("--programs", help="benchmarks to run (default: the real-workload set's and the "
                    "suite manifest's benchmark lines)")
    ap.add_argument("--no-workloads", dest="workloads", action="store_false",
                    help="leave the real-workload set (tests/workloads) out")
    ap.add_argument("--no-build", action="store_true", help="skip the initial build step")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per emulated run (s)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the accelerated per-benchmark profile boots after the rounds")
    ap.add_argument("--order", choices=("fixed", "alternate"), default="fixed",
                    help="order of the systems within a round (alternate: the emulated systems "
                         "reversed in even rounds)")
    ap.add_argument("--no-chart", dest="chart", action="store_false",
                    help="don't draw chart.png (nor install gnuplot)")
    a = ap.parse_args(argv)
    try:
        a.kernel = bench_kernel(a.arch, a.kernel)
    except ValueError as err:
        ap.error(str(err))
    systems = [s for s in a.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems or a.runs < 1:
        ap.error(f"--systems takes a subset of {','.join(SYSTEMS)}; --runs ≥ 1")
    systems = [s for s in SYSTEMS if s in systems]  # canonical order
    real = manifest_benchmarks(WORKLOADS_MANIFEST.read_text()) if a.workloads else []
    benchmarks = real + manifest_benchmarks(MANIFEST.read_text())
    if a.programs:
        wanted = [p for p in a.programs.split(",") if p]
        unknown = [p for p in wanted if p not in benchmarks]
        if unknown:
            ap.error(f"not benchmarks of {MANIFEST}"
                     + (f" or {WORKLOADS_MANIFEST}" if a.workloads else " (--no-workloads)")
                     + f": {', '.join(unknown)}")
        benchmarks = [b for b in benchmarks if b in wanted]
    real = [b for b in real if b in benchmarks]
    wl = bool(real)  # whether the runs need the real-workload set
    programs = ",".join(benchmarks)
    out = Path(a.out).resolve()
    (out / "runs").mkdir(parents=True, exist_ok=True)

    ensure_tools(systems, a.chart, a.arch)
    t_build = time.monotonic()
    if not a.no_build:
        build(systems, a.arch, wl)
        log(f"builds: {time.monotonic() - t_build:.0f} s")
    build_s = round(time.monotonic() - t_build, 1)
    t_rounds = time.monotonic()

    started = datetime.datetime.now().isoformat(timespec="seconds")
    runs: list[dict] = []
    problems: list[str] = []
    oracle = None
    oracle_label = None
    if "native" not in systems:  # an untimed native run, only as the oracle
        log("native oracle run (not in --systems, so not timed)")
        oracle = run_native(out / "runs" / "oracle-native.json", programs, no_build=True, arch=a.arch,
                            workloads=wl)
        oracle_label = "an untimed native run before round 1"
        if oracle is None or run_problems("native", oracle):
            problems.append(f"native oracle: {'; '.join(run_problems('native', oracle))}")
    for rnd in range(1, a.runs + 1):
        for s in round_order(systems, rnd, a.order):
            path = out / "runs" / f"r{rnd}-{s}.json"
            path.unlink(missing_ok=True)
            load = os.getloadavg()[0]
            ru0, st0 = os.times(), _proc_stat()
            t0 = time.monotonic()
            if s == "native":
                data = run_native(path, programs, no_build=True, arch=a.arch, workloads=wl)
            elif s == "qemu":
                data = run_qemu(path, a.kernel, programs, a.timeout, a.arch, workloads=wl)
            else:
                data = run_bochs(path, a.kernel, s in ACCELERATED, programs, a.timeout, a.arch,
                                 backend="stub" if s == "stub" else None, workloads=wl)
            wall = time.monotonic() - t0
            ru1, st1 = os.times(), _proc_stat()
            rec = summarize_run(s, rnd, data, benchmarks)
            if st0 and st1:  # the run's own CPU time: its waited-for process tree
                own = (ru1.children_user + ru1.children_system) - (ru0.children_user + ru0.children_system)
                rec.update({k: (None if v is None else round(v, 3)) for k, v in
                            other_load(st0, st1, own, wall, os.sysconf("SC_CLK_TCK")).items()})
            rec["wall_s"] = round(wall, 3)
            rec["load_before"] = round(load, 2)  # 1-minute load average as the run started
            rec["json"] = str(path)
            rec["run_dir"] = (data or {}).get("run_dir")
            probs = run_problems(s, data)
            if s == "native" and oracle is None and data is not None and not probs:
                oracle, oracle_label = data, f"native run of round {rnd}"
            mism = suite.compare(oracle, data, "native", s, names=benchmarks) if (oracle and data) else []
            if data is not None and oracle is None:
                mism = ["no native oracle to compare with"]
            rec["problems"], rec["mismatches"] = probs, mism
            problems += [f"round {rnd} {s}: {p}" for p in probs + mism]
            runs.append(rec)
            flag = "" if not (probs or mism) else f" ({len(probs) + len(mism)} problem(s))"
            log(f"run {rnd}/{a.runs} {s}: {wall:.0f} s{flag}")

    rounds_s = round(time.monotonic() - t_rounds, 1)
    profile = {}
    if "accel" in systems and a.profile:
        profile = run_profile(out, a.kernel, benchmarks, a.timeout, problems, a.arch, workloads=wl)
    med = compute_medians(runs, systems, benchmarks)
    host = {}
    try:
        host = next((r for r in [oracle] if r), {}).get("host") or {}
    except AttributeError:
        pass
    rep = {
        "config": {"runs": a.runs, "arch": a.arch, "kernel": a.kernel, "systems": systems, "started": started,
                   "order": a.order, "build_s": build_s, "rounds_s": rounds_s,
                   "host": host, "programs": programs,
                   "qemu_command": " ".join(qemu_command(Path("RUN/guest.iso"), Path("RUN/serial.txt"), a.arch))
                   + f" (kernel cmdline: {guestrun.ARCHES[a.arch]['out'].relative_to(ROOT)}/cmdline"
                   " without tsc_early_khz=)"},
        "systems": systems, "benchmarks": benchmarks, "workloads": real, "oracle": oracle_label,
        "runs": runs, "medians": med, "ratios": compute_ratios(med, benchmarks),
        "targets": evaluate_targets(med), "problems": problems, "profile": profile,
    }
    micro = micro_benchmarks(rep)
    rep["chart"] = (draw_chart(rep, out, micro, "chart.png", "Workload-suite micro-benchmarks")
                    if a.chart and micro else None)
    rep["chart_real"] = (draw_chart(rep, out, real, "chart-real.png", "Real workloads")
                         if a.chart and real else None)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(rep))
    log(f"report: {out / 'report.md'}; charts: {rep['chart_real'] or ''} {rep['chart'] or ''}")
    for t in rep["targets"]:
        log(f"target {t['id']}: {t['status']} ({fmt_x(t['ratio'])})")
    if problems:
        log(f"{len(problems)} problem(s); see the report")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
