"""Tests of ci/lib/testkit.py.  Run: python3 -m unittest discover -s ci/lib -p 'test_*.py'"""
import io
import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guestrun  # noqa: E402
import testkit  # noqa: E402

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme sse4_2 avx avx512f hypervisor
bugs\t\t: spectre_v1

processor\t: 1
vendor_id\t: SomethingElse
model name\t: second CPU
flags\t\t: fpu
microcode\t: 0xd0003a5

"""


class ChecksTest(unittest.TestCase):
    def checks(self, **kw):
        out = io.StringIO()
        return testkit.Checks(out=out, **kw), out

    def test_counts_passes_and_failures(self):
        c, _ = self.checks()
        self.assertTrue(c.check(True, "one"))
        self.assertFalse(c.check(False, "two", "why"))
        self.assertTrue(c.check(1 == 1, "three"))
        self.assertFalse(c.check([], "four (an empty list fails)"))
        self.assertEqual(c.passed, 2)
        self.assertEqual(c.failures, ["two", "four (an empty list fails)"])

    def test_detail_style_lines(self):
        c, out = self.checks()
        c.check(True, "fine", "not shown")
        c.check(False, "broken", "line 1\n      line 2")
        c.check(False, "bare")
        self.assertEqual(out.getvalue(), "ok: fine\nFAIL: broken\n      line 1\n      line 2\nFAIL: bare\n")

    def test_inline_style_lines(self):
        c, out = self.checks(style="inline")
        c.check(True, "fine", "3 of 3")
        c.check(True, "plain")
        c.check(False, "broken", "why")
        c.check(False, "bare")
        self.assertEqual(out.getvalue(), "ok: fine (3 of 3)\nok: plain\nFAILED: broken: why\nFAILED: bare\n")

    def test_unknown_style_is_refused(self):
        with self.assertRaises(ValueError):
            testkit.Checks(style="fancy")

    def test_summary_all_passed(self):
        c, out = self.checks()
        c.check(True, "a")
        c.check(True, "b")
        self.assertEqual(c.summary(), 0)
        self.assertTrue(out.getvalue().endswith("ok: b\n\n2 checks passed, 0 failed\n"))

    def test_summary_lists_failures_and_fails(self):
        c, out = self.checks()
        c.check(False, "x")
        c.check(True, "y")
        c.check(False, "z")
        self.assertEqual(c.summary(), 1)
        self.assertTrue(out.getvalue().endswith("\n\n1 checks passed, 2 failed\nfailed: x\nfailed: z\n"),
                        out.getvalue())

    def test_summary_without_blank_line(self):
        c, out = self.checks(style="inline")
        self.assertEqual(c.summary(blank_line=False), 0)
        self.assertEqual(out.getvalue(), "0 checks passed, 0 failed\n")

    def test_prints_to_stdout_by_default(self):
        real, sys.stdout = sys.stdout, io.StringIO()
        try:
            testkit.Checks().check(True, "to stdout")
            got = sys.stdout.getvalue()
        finally:
            sys.stdout = real
        self.assertEqual(got, "ok: to stdout\n")


class LastLinesTest(unittest.TestCase):
    def test_last_six_indented(self):
        text = "\n".join(f"l{i}" for i in range(10)) + "\n\n"
        self.assertEqual(testkit.last_lines(text), "l4\n      l5\n      l6\n      l7\n      l8\n      l9")

    def test_n_and_short_text(self):
        self.assertEqual(testkit.last_lines("a\nb\nc", 2), "b\n      c")
        self.assertEqual(testkit.last_lines("  only  \n"), "only")
        self.assertEqual(testkit.last_lines(""), "")


class RunOutputTest(unittest.TestCase):
    def test_merges_stderr_and_returns_status(self):
        rc, out = testkit.run_output(["sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual(rc, 3)
        self.assertEqual(out, "out\nerr\n")

    def test_timeout_keeps_output_as_text(self):
        rc, out = testkit.run_output(["sh", "-c", "echo before; exec sleep 30"], timeout=1)
        self.assertEqual(rc, -1)
        self.assertEqual(out, "before\n\n(timeout)")

    def test_timeout_without_output(self):
        rc, out = testkit.run_output(["sleep", "30"], timeout=0.5)
        self.assertEqual((rc, out), (-1, "\n(timeout)"))

    def test_env_and_cwd(self):
        with tempfile.TemporaryDirectory() as d:
            rc, out = testkit.run_output(["sh", "-c", 'echo "$X"; pwd'], env={"X": "42", "PATH": "/usr/bin:/bin"},
                                         cwd=Path(d))
        self.assertEqual(rc, 0)
        self.assertEqual(out.splitlines(), ["42", str(Path(d).resolve())])


class CpuinfoTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, text: str) -> Path:
        p = Path(self.dir.name) / "cpuinfo"
        p.write_text(text)
        return p

    def test_first_cpu_only(self):
        p = self.write(INTEL)
        info = testkit.cpuinfo(p)
        self.assertEqual(info["vendor_id"], "GenuineIntel")
        self.assertEqual(info["model name"], "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz")
        self.assertNotIn("microcode", info, "a field of the second CPU")
        self.assertEqual(testkit.host_flags(p), {"fpu", "vme", "sse4_2", "avx", "avx512f", "hypervisor"})

    def test_vendors(self):
        for raw, short in (("GenuineIntel", "intel"), ("AuthenticAMD", "amd"), ("HygonGenuine", "HygonGenuine")):
            p = self.write(f"processor\t: 0\nvendor_id\t: {raw}\nflags\t\t: fpu\n")
            self.assertEqual(testkit.host_vendor(p), raw)
            self.assertEqual(testkit.vendor_short(p), short)

    def test_no_vendor(self):
        p = self.write("processor\t: 0\nflags\t\t: fpu\n")
        self.assertEqual(testkit.host_vendor(p), "?")
        self.assertEqual(testkit.vendor_short(p), "unknown")
        self.assertEqual(testkit.host_flags(self.write("")), set())

    def test_leading_blank_lines(self):
        p = self.write("\n\nprocessor\t: 0\nvendor_id\t: AuthenticAMD\n")
        self.assertEqual(testkit.vendor_short(p), "amd")

    def test_this_host(self):
        if not testkit.CPUINFO.exists():
            self.skipTest("no /proc/cpuinfo")
        self.assertNotEqual(testkit.host_vendor(), "?")
        self.assertTrue(testkit.host_flags())


class BiosRcTest(unittest.TestCase):
    def test_rom_constants_are_guestruns(self):
        self.assertIs(testkit.ROMIMAGE, guestrun.ROMIMAGE)
        self.assertIs(testkit.VGAROMIMAGE, guestrun.VGAROMIMAGE)

    def test_text(self):
        text = testkit.bios_rc_text(2048, "corei7_skylake_x")
        lines = text.splitlines()
        self.assertEqual(lines[0], "megs: 2048")
        self.assertIn(f"romimage: file={guestrun.ROMIMAGE}", lines)
        self.assertIn(f"vgaromimage: file={guestrun.VGAROMIMAGE}", lines)
        self.assertIn("cpu: model=corei7_skylake_x, count=1, ips=10000000", lines)
        self.assertIn(f"clock: sync=none, time0={guestrun.TIME0}", lines)
        self.assertIn("panic: action=fatal", lines)
        self.assertIn("display_library: nogui", lines)
        self.assertFalse(any(ln.startswith(("ata0", "boot:")) for ln in lines), "no boot device")

    def test_defaults_and_no_model(self):
        self.assertIn("\ncpu: model=host, count=1,", testkit.bios_rc_text())
        self.assertTrue(testkit.bios_rc_text().startswith("megs: 64\n"))
        self.assertIn("\ncpu: count=1, ips=", testkit.bios_rc_text(model=""))
        self.assertNotIn("model=", testkit.bios_rc_text(model=""))

    def test_files_per_variant(self):
        with tempfile.TemporaryDirectory() as d:
            a = testkit.bios_rc(Path(d), 64, "host")
            b = testkit.bios_rc(Path(d), 2048, "")
            c = testkit.bios_rc(Path(d), model="core2_penryn_t9600")
            self.assertEqual(len({a, b, c}), 3)
            self.assertEqual(b.name, "bochsrc-bios-2048-default")
            self.assertEqual(a.read_text(), testkit.bios_rc_text(64, "host"))
            self.assertEqual(c.read_text(), testkit.bios_rc_text(64, "core2_penryn_t9600"))


if __name__ == "__main__":
    unittest.main()
