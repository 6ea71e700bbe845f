"""Unit tests of the pure parts of ci/lib/bench.py (stdlib unittest; no emulator is started).

    python3 -m unittest discover -s ci/lib -p 'test_*.py'
"""
import math
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

BENCHES = ["bench-compute", "bench-syscall", "bench-pagefault", "bench-forkexec", "bench-mixed"]


def run_json(times: dict, boot=None, stop="poweroff"):
    """A minimal run-guest / run-native JSON with host_wall_s per program."""
    d = {"programs": [{"name": n, "status": 0, "result": "ok", "host_wall_s": t, "guest_s": t}
                      for n, t in times.items()],
         "failures": []}
    if boot is not None:
        d["boot"] = {"host_wall_s": boot}
        d["stop_reason"] = stop
    return d


# medians wanted: native, bochs, accel, qemu
SYNTH = {
    "native": [{"bench-compute": 1.0, "bench-syscall": 0.04, "bench-pagefault": 0.03,
                "bench-forkexec": 0.2, "bench-mixed": 1.1}] * 3,
    "bochs": [{"bench-compute": 50.0 + i, "bench-syscall": 2.0, "bench-pagefault": 1.0,
               "bench-forkexec": 5.0, "bench-mixed": 40.0} for i in range(3)],
    "accel": [{"bench-compute": 1.05, "bench-syscall": 2.2 - 0.1 * i, "bench-pagefault": 1.0,
               "bench-forkexec": 5.5, "bench-mixed": 4.0} for i in range(3)],
    "qemu": [{"bench-compute": 4.0, "bench-syscall": 0.2, "bench-pagefault": 0.3,
              "bench-forkexec": 1.2, "bench-mixed": 5.0}] * 3,
}
BOOT = {"bochs": [10.0, 11.0, 12.0], "accel": [11.3, 11.0, 11.1], "qemu": [5.0, 5.0, 5.0]}


def synthetic_report():
    runs = []
    for rnd in range(3):
        for s in bench.DEFAULT_SYSTEMS:
            data = run_json(SYNTH[s][rnd], BOOT[s][rnd] if s in BOOT else None)
            rec = bench.summarize_run(s, rnd + 1, data, BENCHES)
            rec["wall_s"] = 1.0
            runs.append(rec)
    med = bench.compute_medians(runs, list(bench.DEFAULT_SYSTEMS), BENCHES)
    return {"config": {"runs": 3, "kernel": "686-pae", "started": "2026-01-01T00:00:00",
                       "host": {"cpu": "Test CPU"}},
            "systems": list(bench.DEFAULT_SYSTEMS), "benchmarks": BENCHES, "oracle": "native run of round 1",
            "runs": runs, "medians": med, "ratios": bench.compute_ratios(med, BENCHES),
            "targets": bench.evaluate_targets(med), "problems": [], "chart": "target/bench/chart.png"}


class Pure(unittest.TestCase):
    def test_median(self):
        self.assertEqual(bench.median([3, 1, 2]), 2)
        self.assertEqual(bench.median([4, 1, 2, 3]), 2.5)
        self.assertEqual(bench.median([None, 5, float("nan")]), 5)
        self.assertIsNone(bench.median([]))
        self.assertIsNone(bench.median([None]))

    def test_ratio(self):
        self.assertAlmostEqual(bench.ratio(3, 2), 1.5)
        self.assertIsNone(bench.ratio(None, 2))
        self.assertIsNone(bench.ratio(1, 0))
        self.assertIsNone(bench.ratio(1, None))

    def test_manifest_benchmarks(self):
        text = ("# comment\ncpuid correctness static\nbench-a benchmark static 10\n"
                "\nbench-b  benchmark dynamic # tail\nshort benchmark\n")
        self.assertEqual(bench.manifest_benchmarks(text), ["bench-a", "bench-b"])

    def test_manifest_file_has_the_issue_benchmarks(self):
        names = bench.manifest_benchmarks(bench.MANIFEST.read_text())
        for b in ("bench-compute", "bench-syscall", "bench-pagefault", "bench-forkexec"):
            self.assertIn(b, names)

    def test_round_order(self):
        systems = ["native", "bochs", "accel"]
        self.assertEqual(bench.round_order(systems, 1), systems)
        self.assertEqual(bench.round_order(systems, 2), systems)
        self.assertEqual(bench.round_order(systems, 1, "alternate"), ["native", "bochs", "accel"])
        self.assertEqual(bench.round_order(systems, 2, "alternate"), ["native", "accel", "bochs"])
        self.assertEqual(bench.round_order(systems, 3, "alternate"), ["native", "bochs", "accel"])
        self.assertEqual(bench.round_order(["bochs", "accel", "qemu"], 2, "alternate"),
                         ["qemu", "accel", "bochs"])
        # over an even number of rounds each emulated system runs first as often as the other
        firsts = [bench.round_order(systems, r, "alternate")[1] for r in range(1, 5)]
        self.assertEqual(firsts.count("bochs"), firsts.count("accel"))
        with self.assertRaises(ValueError):
            bench.round_order(systems, 1, "random")

    def test_parse_proc_stat(self):
        text = ("cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 0 10 500 3 0 1 1 0 0\nintr 5\n")
        self.assertEqual(bench.parse_proc_stat(text), {"busy": 128, "idle": 1007, "steal": 3})
        with self.assertRaises(ValueError):
            bench.parse_proc_stat("intr 5\n")

    def test_other_load(self):
        before = {"busy": 1000, "idle": 5000, "steal": 10}
        # 10 s on 2 CPUs at 100 Hz: 2000 ticks; 1500 busy of which the run itself used 10 s
        after = {"busy": 2500, "idle": 5480, "steal": 30}
        got = bench.other_load(before, after, 10.0, 10.0, 100)
        self.assertAlmostEqual(got["other_cpus"], 0.5)
        self.assertAlmostEqual(got["steal_share"], 20 / 2000)
        # the run's own time counted beyond the busy ticks (tick rounding): never negative
        self.assertEqual(bench.other_load(before, after, 20.0, 10.0, 100)["other_cpus"], 0.0)
        self.assertEqual(bench.other_load(before, after, 1.0, 0.0, 100),
                         {"other_cpus": None, "steal_share": None})

    def test_summarize_run(self):
        rec = bench.summarize_run("accel", 2, run_json({"bench-compute": 1.5}, boot=11.0), BENCHES)
        self.assertEqual(rec["times"]["bench-compute"], 1.5)
        self.assertIsNone(rec["times"]["bench-syscall"])
        self.assertEqual(rec["boot_s"], 11.0)
        self.assertEqual(rec["round"], 2)
        nat = bench.summarize_run("native", 1, run_json({"bench-compute": 1.0}), BENCHES)
        self.assertIsNone(nat["boot_s"])
        empty = bench.summarize_run("qemu", 1, None, BENCHES)
        self.assertIsNone(empty["times"]["bench-compute"])

    def test_medians_and_ratios(self):
        rep = synthetic_report()
        med = rep["medians"]
        self.assertEqual(med["bochs"]["times"]["bench-compute"], 51.0)
        self.assertAlmostEqual(med["accel"]["times"]["bench-syscall"], 2.1)
        self.assertEqual(med["bochs"]["boot_s"], 11.0)
        self.assertEqual(med["accel"]["boot_s"], 11.1)
        self.assertIsNone(med["native"]["boot_s"])
        self.assertEqual(med["accel"]["runs"], 3)
        r = rep["ratios"]["bench-compute"]
        self.assertAlmostEqual(r["accel_speedup_vs_bochs"], 51.0 / 1.05)
        self.assertAlmostEqual(r["accel_over_native"], 1.05)
        self.assertAlmostEqual(r["qemu_over_accel"], 4.0 / 1.05)
        self.assertAlmostEqual(rep["ratios"]["boot"]["accel_over_bochs"], 11.1 / 11.0)

    def test_targets(self):
        t = {x["id"]: x for x in synthetic_report()["targets"]}
        self.assertEqual(t["compute-native"]["status"], "met")     # 1.05 ≤ 1.10
        self.assertEqual(t["compute-qemu"]["status"], "met")       # 1.05 < 4.0
        self.assertEqual(t["syscall-bochs"]["status"], "met")      # 2.1 / 2.0 = 1.05 ≤ 1.05
        self.assertEqual(t["pagefault-bochs"]["status"], "met")    # 1.0
        self.assertEqual(t["forkexec-bochs"]["status"], "missed")  # 1.10 > 1.05
        self.assertEqual(t["boot-bochs"]["status"], "met")         # 11.1 / 11.0 ≈ 1.009
        self.assertAlmostEqual(t["forkexec-bochs"]["ratio"], 1.1)

    def test_targets_limits(self):
        def med(accel_c, native_c, qemu_c, accel_boot, bochs_boot):
            return {"accel": {"times": {"bench-compute": accel_c}, "boot_s": accel_boot},
                    "native": {"times": {"bench-compute": native_c}, "boot_s": None},
                    "qemu": {"times": {"bench-compute": qemu_c}, "boot_s": 1.0},
                    "bochs": {"times": {}, "boot_s": bochs_boot}}
        t = {x["id"]: x for x in bench.evaluate_targets(med(1.2, 1.0, 1.2, 10.3, 10.0))}
        self.assertEqual(t["compute-native"]["status"], "missed")
        self.assertEqual(t["compute-qemu"]["status"], "missed")  # equal is not faster
        self.assertEqual(t["boot-bochs"]["status"], "missed")
        self.assertEqual(t["syscall-bochs"]["status"], "not evaluated")
        self.assertIsNone(t["syscall-bochs"]["ratio"])

    def test_targets_missing_systems(self):
        t = bench.evaluate_targets({"native": {"times": {"bench-compute": 1.0}, "boot_s": None}})
        self.assertTrue(all(x["status"] == "not evaluated" for x in t))

    def test_render_markdown(self):
        rep = synthetic_report()
        md = bench.render_markdown(rep)
        self.assertIn("# plex86-accel benchmarks (686-pae kernel)", md)
        self.assertIn("| bench-compute | 1.00 | 51.00 | 1.05 | 4.00 | 48.57× | 1.05× | 3.81× |", md)
        self.assertIn("| 11.00 s | 11.10 s | 5.00 s |", md)
        self.assertIn("bench-forkexec no slower than 1.05× plain Bochs", md)
        self.assertIn("| **missed** |", md)
        self.assertIn("matched the native oracle (native run of round 1)", md)
        self.assertIn("target/bench/chart.png", md)
        self.assertEqual(md.count("\n| 3 | "), len(bench.DEFAULT_SYSTEMS))  # all-runs table: round 3 rows

    def test_render_markdown_problems_and_subset(self):
        rep = synthetic_report()
        systems = ["native", "accel"]
        rep["systems"] = systems
        rep["medians"] = {s: rep["medians"][s] for s in systems}
        rep["runs"] = [r for r in rep["runs"] if r["system"] in systems]
        rep["targets"] = bench.evaluate_targets(rep["medians"])
        rep["ratios"] = bench.compute_ratios(rep["medians"], BENCHES)
        rep["problems"] = ["round 1 accel: bench-mixed: result native=a accel=b"]
        md = bench.render_markdown(rep)
        self.assertIn("**1 problem(s)**", md)
        self.assertIn("- round 1 accel: bench-mixed: result native=a accel=b", md)
        self.assertNotIn("plain Bochs (s)", md)
        self.assertNotIn("QEMU / accel", md)
        self.assertIn("not evaluated", md)

    def test_stub_system_beside_todays_executor(self):
        # ci/bench --systems native,accel,stub: the stub executor's column and its ratios.
        systems = ["native", "accel", "stub"]
        stub = [{"bench-compute": 1.10, "bench-syscall": 2.0, "bench-pagefault": 1.2,
                 "bench-forkexec": 5.0, "bench-mixed": 4.4}] * 3
        runs = []
        for rnd in range(3):
            for s in systems:
                times = stub[rnd] if s == "stub" else SYNTH[s][rnd]
                runs.append(bench.summarize_run(s, rnd + 1, run_json(times, 11.0), BENCHES))
        med = bench.compute_medians(runs, systems, BENCHES)
        self.assertEqual(med["stub"]["boot_s"], 11.0)
        ratios = bench.compute_ratios(med, BENCHES)
        self.assertAlmostEqual(ratios["bench-compute"]["stub_over_accel"], 1.10 / 1.05)
        self.assertAlmostEqual(ratios["bench-mixed"]["stub_over_native"], 4.4 / 1.1)
        rep = {"config": {"runs": 3, "kernel": "686-pae"}, "systems": systems,
               "benchmarks": BENCHES, "oracle": "native run of round 1", "runs": runs,
               "medians": med, "ratios": ratios, "targets": bench.evaluate_targets(med),
               "problems": [], "chart": None}
        md = bench.render_markdown(rep)
        self.assertIn("plex86-accel, stub executor (s)", md)
        self.assertIn("stub executor / today's executor", md)
        self.assertIn("| bench-compute | 1.00 | 1.05 | 1.10 | 1.05× | 1.05× | 1.10× |", md)
        self.assertNotIn("stub", "".join(bench.DEFAULT_SYSTEMS), "opt-in only")

    def test_gnuplot_data_and_script(self):
        rep = synthetic_report()
        rep["medians"]["qemu"]["times"]["bench-mixed"] = None
        data = bench.gnuplot_data(rep, BENCHES).splitlines()
        self.assertEqual(data[0], "# bench native bochs accel qemu")
        self.assertEqual(data[1].split(), ["bench-compute", "1", "51", "1.05", "4"])
        self.assertTrue(data[5].endswith(" NaN"))
        gp = bench.gnuplot_script(rep, "d.dat", "c.png", BENCHES, "Micro-benchmarks")
        self.assertIn("set logscale y", gp)
        self.assertIn("set yrange [0.01:100]", gp)
        self.assertIn("set title 'Micro-benchmarks, 686-pae kernel", gp)
        self.assertEqual(gp.count("xtic(1)"), 4)
        # A chart of a subset: its rows and its range come from that subset only.
        self.assertEqual(len(bench.gnuplot_data(rep, ["bench-syscall"]).splitlines()), 2)
        gp = bench.gnuplot_script(rep, "d.dat", "c.png", ["bench-syscall"], "x")
        self.assertIn("set yrange [0.01:10]", gp)

    def test_real_workloads_lead_the_report(self):
        # ci/bench with the real-workload set: their table first, then the micro-benchmarks',
        # each with every system's medians and the ratios; both charts named.
        rep = synthetic_report()
        real = {"native": 0.8, "bochs": 80.0, "accel": 8.0, "qemu": 24.0}
        for r in rep["runs"]:
            r["times"]["real-gcc"] = real[r["system"]]
        benches = ["real-gcc"] + BENCHES
        rep["benchmarks"], rep["workloads"] = benches, ["real-gcc"]
        rep["medians"] = bench.compute_medians(rep["runs"], rep["systems"], benches)
        rep["ratios"] = bench.compute_ratios(rep["medians"], benches)
        rep["chart_real"] = "target/bench/chart-real.png"
        self.assertEqual(bench.micro_benchmarks(rep), BENCHES)
        md = bench.render_markdown(rep)
        real_at, micro_at = md.index("## Real workloads"), md.index("## Micro-benchmarks")
        self.assertLess(real_at, micro_at)
        row = md.index("| real-gcc | 0.800 | 80.00 | 8.00 | 24.00 | 10.00× | 10.00× | 3.00× |")
        self.assertTrue(real_at < row < micro_at)
        self.assertGreater(md.index("| bench-compute | 1.00 |"), micro_at)
        self.assertIn("`target/bench/chart-real.png`, `target/bench/chart.png`", md)
        # Only one kind: one untitled table.
        rep["workloads"] = []
        self.assertNotIn("## Real workloads", bench.render_markdown(rep))

    def test_qemu_append_and_command(self):
        self.assertEqual(bench.qemu_append("console=ttyS0,115200 quiet tsc_early_khz=60000 x"),
                         "console=ttyS0,115200 quiet x")
        cmd = bench.qemu_command(Path("/r/guest.iso"), Path("/r/serial.txt"))
        self.assertEqual(cmd[0], "qemu-system-i386")
        self.assertIn("tcg", cmd)
        self.assertIn("-no-reboot", cmd)
        self.assertIn("file:/r/serial.txt", cmd)

    def test_run_problems(self):
        self.assertEqual(bench.run_problems("qemu", None), ["no JSON written"])
        self.assertEqual(bench.run_problems("bochs", run_json({"x": 1}, boot=1, stop="timeout")),
                         ["stop_reason=timeout"])
        self.assertEqual(bench.run_problems("native", run_json({"x": 1})), [])

    def test_stats_delta_and_time_split(self):
        base = {"calls": 100, "runs": 10, "native_ns": 1_000_000_000, "run_wall_ns": 1_100_000_000,
                "demand_fills": 5, "exits": {"budget_expired": 10, "page_fault": 1},
                "declines": {"short_burst": 50}}
        bench_stats = {"calls": 1100, "runs": 1010, "native_ns": 2_000_000_000,
                       "run_wall_ns": 2_120_000_000, "demand_fills": 65,
                       "exits": {"budget_expired": 1000, "page_fault": 1, "system_call": 0},
                       "declines": {"short_burst": 80, "no_budget": 3}}
        d = bench.stats_delta(bench_stats, base)
        self.assertEqual(d["runs"], 1000)
        self.assertEqual(d["native_ns"], 1_000_000_000)
        self.assertEqual(d["exits"], {"budget_expired": 990})  # unchanged and zero counts dropped
        self.assertEqual(d["declines"], {"short_burst": 30, "no_budget": 3})
        t = bench.time_split(1.1, d)
        self.assertAlmostEqual(t["native_s"], 1.0)
        self.assertAlmostEqual(t["overhead_s"], 0.02)
        self.assertAlmostEqual(t["emulated_s"], 1.1 - 1.02)
        self.assertAlmostEqual(t["overhead_us_per_run"], 20.0)
        self.assertEqual(t["exits"], [("budget_expired", 990)])
        self.assertEqual(t["declines"][0], ("short_burst", 30))
        self.assertIsNone(bench.time_split(1.0, bench.stats_delta({}, {}))["overhead_us_per_run"])

    def test_bounds_notes_only_for_missed_targets(self):
        rep = synthetic_report()
        missed = [t["id"] for t in rep["targets"] if t["status"] == "missed"]
        self.assertTrue(missed)
        self.assertEqual(len(bench.bounds_notes(rep)), len(missed))
        rep["profile"] = {"bench-forkexec": bench.time_split(5.5, {
            "runs": 0, "native_ns": 0, "run_wall_ns": 0, "demand_fills": 0,
            "exits": {}, "declines": {"short_burst": 7}})}
        notes = bench.bounds_notes(rep)
        fork = next(n for n in notes if n.startswith("**forkexec-bochs**"))
        self.assertIn("Native code is 0% of it", fork)
        self.assertIn("ranged 5.50–5.50 s", fork)
        md = bench.render_markdown(rep)
        self.assertIn("## Where the accelerated time goes", md)
        self.assertIn("| bench-forkexec | 5.50 | 0.000 | 0.000 | 5.50 | 0 (0) | – | 0 | – | short_burst 7 |", md)
        self.assertIn("## What bounds the missed targets", md)

    def test_round_ratios_pair_each_round(self):
        runs = [{"round": 1, "system": "bochs", "times": {"b": 2.0}, "boot_s": 10.0},
                {"round": 1, "system": "accel", "times": {"b": 1.0}, "boot_s": 11.0},
                {"round": 2, "system": "accel", "times": {"b": 3.0}, "boot_s": None},
                {"round": 2, "system": "bochs", "times": {"b": 2.0}, "boot_s": 10.0},
                {"round": 3, "system": "accel", "times": {"b": 9.0}, "boot_s": 9.0}]  # no pair
        self.assertEqual(bench.round_ratios(runs, "accel", "bochs", "b"), [0.5, 1.5])
        self.assertEqual(bench.round_ratios(runs, "accel", "bochs", "boot"), [1.1])

    def test_spread(self):
        rep = synthetic_report()
        self.assertEqual(bench.spread(rep["runs"], "bochs", "boot"), (10.0, 12.0))
        self.assertEqual(bench.spread(rep["runs"], "bochs", "bench-compute"), (50.0, 52.0))
        self.assertIsNone(bench.spread(rep["runs"], "native", "boot"))


if __name__ == "__main__":
    unittest.main()
