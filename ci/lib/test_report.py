"""Unit tests of ci/lib/report.py (stdlib unittest; no emulator is started).

    python3 -m unittest discover -s ci/lib -p 'test_*.py'
"""
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import report  # noqa: E402

BENCHES = ["bench-compute", "bench-forkexec"]
STATS = {"native_ns": 1_000_000_000, "wall_ns": 4_000_000_000, "native_share": 0.25, "runs": 10,
         "calls": 99, "demand_fills": 7, "exits": {"system_call": 3, "budget_expired": 5, "cpuid": 0},
         "declines": {"short_burst": 2, "backoff": 0}, "mmu": {"invlpg": 4},
         "code_pages": {"registered": 1}}


def make_rep(accel_forkexec=(3.0, 3.1, 6.3), accel_boot=(12.0, 16.1, 12.2)):
    """A ci/bench report.json of 3 alternating rounds; round 1's accelerated run is slow."""
    runs = []
    for rnd in (1, 2, 3):
        i = rnd - 1
        for s in bench.round_order(["native", "bochs", "accel"], rnd, "alternate"):
            times = {"native": {"bench-compute": 1.0, "bench-forkexec": 0.2},
                     "bochs": {"bench-compute": 50.0 + i, "bench-forkexec": 3.0 + 0.1 * i},
                     "accel": {"bench-compute": 1.1, "bench-forkexec": accel_forkexec[i]}}[s]
            boot = {"native": None, "bochs": 12.0 + 0.1 * i, "accel": accel_boot[i]}[s]
            runs.append({"round": rnd, "system": s, "times": times, "boot_s": boot,
                         "other_cpus": 0.9 if (rnd, s) == (1, "accel") else 0.02 * rnd,
                         "steal_share": 0.01, "json": None})
    systems = ["native", "bochs", "accel"]
    med = bench.compute_medians(runs, systems, BENCHES)
    return {"config": {"runs": 3, "kernel": "686-pae", "order": "alternate", "rounds_s": 400.0,
                       "host": {"cpu": "Test CPU"}},
            "systems": systems, "benchmarks": BENCHES, "runs": runs, "medians": med,
            "problems": []}


class Report(unittest.TestCase):
    def test_fmt_range(self):
        self.assertEqual(report.fmt_range([3.0, 1.0, 2.0]), "2.00 (1.00–3.00)")
        self.assertEqual(report.fmt_range([4.0, 1.0, 2.0, 3.0]), "2.50 (1.00–4.00)")
        self.assertEqual(report.fmt_range([None, 2.0]), "2.00")
        self.assertEqual(report.fmt_range([None, True]), "–")
        self.assertEqual(report.fmt_range([]), "–")

    def test_bench_table_medians_ranges_and_ratios(self):
        text = report.bench_table(make_rep())
        self.assertIn("3 rounds, interleaved", text)
        self.assertIn("alternating order", text)
        self.assertIn("The rounds took 400 s after the builds.", text)
        # the slow first accelerated round is the top of the range, not the median
        # paired by round: 3.0/3.0, 3.1/3.1, 6.3/3.2
        self.assertIn("| bench-forkexec | 0.20 (0.20–0.20) | 3.10 (3.00–3.20) | 3.10 (3.00–6.30) | 1.00× "
                      "| 1.00× (1.00–1.97) | 15.50× |", text)
        self.assertIn("| bench-compute | 1.00 (1.00–1.00) | 51.00 (50.00–52.00) | 1.10 (1.10–1.10) | 46.36× "
                      "| 0.02× (0.02–0.02) | 1.10× |", text)
        self.assertIn("| boot to init | – | 12.10 (12.00–12.20) | 12.20 (12.00–16.10) | 0.99× "
                      "| 1.00× (1.00–1.33) | – |", text)
        self.assertIn("more than 5% slower than plain Bochs (accel / plain per round, median): none.", text)
        self.assertIn("| 2 | accel | 1.10 | 3.10 | 16.10 | 0.04 | 1% |", text)
        self.assertIn("CPUs busy during: round 1 accel (0.90 CPUs).", text)
        self.assertIn("matched the host-native run", text)

    def test_bench_table_calls_out_slower_medians(self):
        rep = make_rep(accel_forkexec=(3.4, 3.5, 3.3), accel_boot=(12.0, 13.0, 12.9))
        for r in rep["runs"]:
            r["other_cpus"] = None
        text = report.bench_table(rep)
        self.assertNotIn("CPUs busy during", text)
        self.assertIn("| 1 | bochs | 50.00 | 3.00 | 12.00 | – | 1% |", text)
        # 3.4/3.0, 3.5/3.1, 3.3/3.2 and 12.0/12.0, 13.0/12.1, 12.9/12.2
        self.assertIn("(accel / plain per round, median): bench-forkexec 1.13× (1.03–1.13), "
                      "boot to init 1.06× (1.00–1.07).", text)

    def test_bench_table_with_qemu_has_its_column_and_speedup(self):
        rep = make_rep()
        for rnd in (1, 2, 3):
            rep["runs"].append({"round": rnd, "system": "qemu", "json": None, "other_cpus": 0.0,
                                "steal_share": 0.0, "boot_s": 5.0 + rnd,
                                "times": {"bench-compute": 4.4, "bench-forkexec": 1.0 + rnd}})
        rep["systems"].append("qemu")
        rep["medians"] = bench.compute_medians(rep["runs"], rep["systems"], BENCHES)
        text = report.bench_table(rep)
        self.assertIn("| accel / native | speedup over QEMU |", text)
        # QEMU medians 4.4 and 3.0 s against accel's 1.1 and 3.1 s
        self.assertIn("| bench-compute | 1.00 (1.00–1.00) | 51.00 (50.00–52.00) | 1.10 (1.10–1.10) "
                      "| 4.40 (4.40–4.40) | 46.36× | 0.02× (0.02–0.02) | 1.10× | 4.00× |", text)
        self.assertIn("| bench-forkexec | 0.20 (0.20–0.20) | 3.10 (3.00–3.20) | 3.10 (3.00–6.30) "
                      "| 3.00 (2.00–4.00) | 1.00× | 1.00× (1.00–1.97) | 15.50× | 0.97× |", text)
        self.assertIn("| boot to init | – | 12.10 (12.00–12.20) | 12.20 (12.00–16.10) "
                      "| 7.00 (6.00–8.00) | 0.99× | 1.00× (1.00–1.33) | – | 0.57× |", text)
        self.assertIn("| 3 | qemu | 4.40 | 4.00 | 8.00 |", text)

    def test_bench_table_problems(self):
        rep = make_rep()
        rep["problems"] = ["round 1 accel: stop_reason=timeout"]
        self.assertIn("1 problem(s): round 1 accel: stop_reason=timeout", report.bench_table(rep))

    def test_stats_lines(self):
        lines = report.stats_lines(STATS, "round 3")
        self.assertEqual(lines[0], "Accelerator statistics (round 3):")
        self.assertIn("native time 1.00 s of 4.00 s (25.0%); 10 native runs, 99 calls, 7 demand fills", lines[2])
        self.assertEqual(lines[3], "- exits: budget_expired 5, system_call 3")
        self.assertEqual(lines[4], "- declines: short_burst 2")

    def test_last_accel_stats(self):
        rep = make_rep()
        with tempfile.TemporaryDirectory() as d:
            for rnd in (1, 2):
                Path(d, f"r{rnd}.json").write_text(json.dumps({"accel_stats": dict(STATS, runs=rnd)}))
            for r in rep["runs"]:
                if r["system"] == "accel" and r["round"] in (1, 2):
                    r["json"] = str(Path(d, f"r{r['round']}.json"))
                elif r["system"] == "accel":
                    r["json"] = str(Path(d, "missing.json"))
            rnd, stats = report.last_accel_stats(rep)
        self.assertEqual((rnd, stats["runs"]), (2, 2))
        self.assertEqual(report.last_accel_stats({"runs": []}), (None, None))


if __name__ == "__main__":
    unittest.main()
