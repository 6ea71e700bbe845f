"""Tests of ci/lib/suite.py.  Run: python3 -m unittest discover -s ci/lib -p 'test_*.py'"""
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402

NATIVE = """\
@@SUITE START
@@BEGIN cpuid
cpu: vendor=AuthenticAMD
cpu: leaf1=eax=00a10f11,ecx=fffa3203,edx=178bfbff
cpu: brand=AMD_EPYC
result: cpuid-consistent
@@END cpuid status=0 guest_ns=9183621
@@BEGIN simd
cpu: xcr0=0xe7
cpu: avx2=yes
cpu: avx512=yes
info: ops=116704 rcp/rsqrt_within_bound=256/256
result: simd-bc4f08144df8db89
@@END simd status=0 guest_ns=10538673
@@BEGIN bench-compute
info: rounds=6500 elapsed=1.011s
result: rounds6500-dfdb79102f56c687
@@END bench-compute status=0 guest_ns=1011656556
@@SUITE DONE programs=3 failed=0
"""

# The same run as seen on a guest serial console: CRLF line ends, kernel messages
# before the suite and in front of a marker, different cpu: lines.
GUEST = (
    "[    0.000000] Linux version 6.1.0-50-686-pae\r\n"
    "Run /init as init process\r\n"
    "@@SUITE START\r\n"
    "@@BEGIN cpuid\r\n"
    "cpu: vendor=GenuineIntel\r\n"
    "result: cpuid-consistent\r\n"
    "@@END cpuid status=0 guest_ns=300000000\r\n"
    "@@BEGIN simd\r\n"
    "cpu: avx2=yes\r\n"
    "cpu: avx512=yes\r\n"
    "result: simd-bc4f08144df8db89\r\n"
    "[   12.345678] random: crng init done\r@@END simd status=0 guest_ns=350000000\r\n"
    "@@BEGIN bench-compute\r\n"
    "result: rounds6500-dfdb79102f56c687\r\n"
    "@@END bench-compute status=0 guest_ns=33000000000\r\n"
    "@@SUITE DONE programs=3 failed=0\r\n"
    "@@SUITE-RUN EXIT status=0\r\n"
)

TRUNCATED = """\
@@SUITE START
@@BEGIN cpuid
result: cpuid-consistent
@@END cpuid status=0 guest_ns=1000
@@BEGIN smc
info: about to run generated code
"""

MISSING_RESULT = """\
@@SUITE START
@@BEGIN signals
info: ITIMER_REAL fired after 17964 loops, 0.020 s
@@END signals status=139 guest_ns=5000000
@@BEGIN x87
result: FAIL-fprem-incomplete
@@END x87 status=1 guest_ns=2000
@@BEGIN memory
result: memory-e385d72448cc81e1
result: memory-e385d72448cc81e1
@@END memory status=0 guest_ns=2000
@@SUITE DONE programs=3 failed=3
"""


class ParseTest(unittest.TestCase):
    def test_native_run(self):
        run = suite.parse(NATIVE)
        self.assertTrue(run["started"])
        self.assertTrue(run["complete"])
        self.assertEqual(run["summary"], {"programs": 3, "failed": 0})
        names = [p["name"] for p in run["programs"]]
        self.assertEqual(names, ["cpuid", "simd", "bench-compute"])
        cpuid, simd, bench = run["programs"]
        self.assertEqual(cpuid["result"], "cpuid-consistent")
        self.assertEqual(cpuid["status"], 0)
        self.assertEqual(cpuid["cpu"]["vendor"], "AuthenticAMD")
        # only the first '=' separates key and value
        self.assertEqual(cpuid["cpu"]["leaf1"], "eax=00a10f11,ecx=fffa3203,edx=178bfbff")
        self.assertAlmostEqual(cpuid["guest_s"], 0.009183621)
        self.assertEqual(simd["cpu"], {"xcr0": "0xe7", "avx2": "yes", "avx512": "yes"})
        self.assertEqual(simd["info"], ["ops=116704 rcp/rsqrt_within_bound=256/256"])
        self.assertEqual(len(simd["output"]), 5)
        self.assertEqual(bench["result"], "rounds6500-dfdb79102f56c687")
        self.assertIsNone(bench["host_wall_s"])
        for p in run["programs"]:
            self.assertTrue(p["ended"])
            self.assertEqual(p["problems"], [])
        self.assertEqual(suite.failures(run), [])

    def test_guest_console_noise(self):
        run = suite.parse(GUEST)
        self.assertTrue(run["complete"])
        self.assertEqual([p["name"] for p in run["programs"]], ["cpuid", "simd", "bench-compute"])
        simd = run["programs"][1]
        self.assertEqual(simd["status"], 0)
        self.assertTrue(simd["ended"])
        self.assertEqual(simd["result"], "simd-bc4f08144df8db89")
        self.assertEqual(run["programs"][2]["guest_s"], 33.0)
        self.assertIn("Run /init as init process", run["noise"])
        self.assertIn("@@SUITE-RUN EXIT status=0", run["noise"])
        self.assertEqual(suite.failures(run), [])

    def test_truncated(self):
        run = suite.parse(TRUNCATED)
        self.assertTrue(run["started"])
        self.assertFalse(run["complete"])
        self.assertFalse(run["done"])
        self.assertIsNone(run["summary"])
        smc = run["programs"][1]
        self.assertEqual(smc["name"], "smc")
        self.assertFalse(smc["ended"])
        self.assertIsNone(smc["status"])
        self.assertIsNone(smc["result"])
        self.assertIsNone(smc["guest_s"])
        self.assertEqual(smc["info"], ["about to run generated code"])
        probs = suite.failures(run)
        self.assertIn("suite incomplete (no @@SUITE DONE)", probs)
        self.assertTrue(any(p.startswith("smc: no @@END") for p in probs))
        self.assertIn("smc: no result line", probs)

    def test_missing_and_failed_results(self):
        run = suite.parse(MISSING_RESULT)
        sig, x87, mem = run["programs"]
        self.assertIsNone(sig["result"])
        self.assertEqual(sig["status"], 139)
        self.assertIn("no result line", sig["problems"])
        self.assertIn("exit status 139", sig["problems"])
        self.assertEqual(x87["result"], "FAIL-fprem-incomplete")
        self.assertIn("result FAIL-fprem-incomplete", x87["problems"])
        self.assertIn("2 result lines", mem["problems"])
        self.assertEqual(len(suite.failures(run)), 5)

    def test_begin_without_end_then_next_program(self):
        text = "@@SUITE START\n@@BEGIN a\nresult: x\n@@BEGIN b\nresult: y\n@@END b status=0 guest_ns=1\n"
        run = suite.parse(text)
        a, b = run["programs"]
        self.assertFalse(a["ended"])
        self.assertEqual(a["result"], "x")
        self.assertTrue(b["ended"])
        self.assertEqual(b["problems"], [])

    def test_end_without_begin(self):
        run = suite.parse("@@SUITE START\n@@END lost status=0 guest_ns=5\n@@SUITE DONE programs=1 failed=0\n")
        (p,) = run["programs"]
        self.assertEqual(p["name"], "lost")
        self.assertIn("@@END without matching @@BEGIN", p["problems"])

    def test_timestamps(self):
        lines = [(10.0, "@@SUITE START"), (10.5, "@@BEGIN cpuid"), (11.0, "result: ok"),
                 (12.25, "@@END cpuid status=0 guest_ns=1750000000"),
                 (12.3, "@@SUITE DONE programs=1 failed=0")]
        run = suite.parse(lines)
        self.assertEqual(run["programs"][0]["host_wall_s"], 1.75)
        text = "".join(f"{t:10.3f} {s}\n" for t, s in lines)
        run2 = suite.parse_timestamped(text)
        self.assertEqual(run2["programs"][0]["host_wall_s"], 1.75)
        self.assertEqual(run2["programs"][0]["result"], "ok")

    def test_file_object_and_path(self):
        run = suite.parse(io.StringIO(NATIVE))
        self.assertEqual(len(run["programs"]), 3)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(GUEST)
        try:
            run = suite.parse_file(f.name)
            self.assertEqual(run["programs"][0]["cpu"]["vendor"], "GenuineIntel")
        finally:
            os.unlink(f.name)


class CompareTest(unittest.TestCase):
    def test_native_vs_guest_agree(self):
        # different cpu: lines and timings, same results
        self.assertEqual(suite.compare(suite.parse(NATIVE), suite.parse(GUEST), "native", "bochs"), [])

    def test_result_and_status_differences(self):
        other = NATIVE.replace("result: simd-bc4f08144df8db89", "result: simd-0000000000000000") \
                      .replace("@@END bench-compute status=0", "@@END bench-compute status=124")
        diffs = suite.compare(suite.parse(NATIVE), suite.parse(other), "native", "bochs")
        self.assertEqual(diffs, [
            "simd: result native=simd-bc4f08144df8db89 bochs=simd-0000000000000000",
            "bench-compute: status native=0 bochs=124",
        ])

    def test_truncated_run(self):
        diffs = suite.compare(suite.parse(NATIVE), suite.parse(TRUNCATED), "native", "bochs")
        self.assertIn("bochs: suite incomplete (no @@SUITE DONE)", diffs)
        self.assertIn("smc: not run in native", diffs)
        self.assertIn("simd: not run in bochs", diffs)
        self.assertIn("bench-compute: not run in bochs", diffs)
        # cpuid ran in both with the same result: no line about it
        self.assertFalse(any(d.startswith("cpuid") for d in diffs))

    def test_missing_result_line(self):
        a = suite.parse("@@SUITE START\n@@BEGIN p\nresult: r1\n@@END p status=0 guest_ns=1\n"
                        "@@SUITE DONE programs=1 failed=0\n")
        b = suite.parse("@@SUITE START\n@@BEGIN p\ninfo: crashed\n@@END p status=139 guest_ns=1\n"
                        "@@SUITE DONE programs=1 failed=1\n")
        self.assertEqual(suite.compare(a, b), ["p: status a=0 b=139", "p: result a=r1 b=(none)"])
        neither = suite.compare(b, b)
        self.assertEqual(neither, ["p: no result line in either run"])

    def test_names_subset(self):
        a, b = suite.parse(NATIVE), suite.parse(GUEST)
        self.assertEqual(suite.compare(a, b, names=["simd"]), [])
        self.assertEqual(suite.compare(a, b, names=["smc"]), ["smc: not run in a and b"])

    def test_cpu_lines_when_asked(self):
        a, b = suite.parse(NATIVE), suite.parse(GUEST)
        diffs = suite.compare(a, b, "native", "bochs", cpu_lines_except=[])
        self.assertIn("cpuid: cpu: vendor native=AuthenticAMD bochs=GenuineIntel", diffs)
        self.assertIn("cpuid: cpu: brand native=AMD_EPYC bochs=(none)", diffs)
        self.assertIn("simd: cpu: xcr0 native=0xe7 bochs=(none)", diffs)
        self.assertFalse(any("avx2" in d for d in diffs), diffs)
        only_simd = suite.compare(a, b, "native", "bochs", cpu_lines_except=["cpuid"])
        self.assertEqual(only_simd, ["simd: cpu: xcr0 native=0xe7 bochs=(none)"])
        self.assertEqual(suite.compare(a, a, cpu_lines_except=[]), [])

    def test_compare_results_cli_cpu_lines(self):
        import subprocess
        tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compare-results")
        with tempfile.TemporaryDirectory() as d:
            import json
            pa, pb = os.path.join(d, "a.json"), os.path.join(d, "b.json")
            ra, rb = suite.parse(NATIVE), suite.parse(GUEST)
            for r in (ra, rb):
                r["failures"] = []
                for p in r["programs"]:
                    p["status"] = 0
            json.dump(ra, open(pa, "w"))
            json.dump(rb, open(pb, "w"))
            run = lambda *args: subprocess.run([sys.executable, tool, *args],  # noqa: E731
                                               capture_output=True, text=True)
            self.assertEqual(run(pa, pb).returncode, 0)
            r = run("--cpu-lines", pa, pb)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("cpuid: cpu: vendor", r.stdout)
            r = run("--cpu-lines", "--cpu-lines-except", "cpuid,simd", pa, pb)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("cpu: lines of cpuid,simd not compared", r.stdout)
            self.assertEqual(run("--cpu-lines", pa).returncode, 2)


if __name__ == "__main__":
    unittest.main()
