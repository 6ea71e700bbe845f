"""Tests of the real-workload set's plumbing: its manifest and scripts (tests/workloads),
ci/run-native --workloads (the chroot command, the merged protocol), ci/run-guest --workloads
and ci/bench's list of benchmarks.
Run: python3 -m unittest discover -s ci/lib -p 'test_*.py'"""
import os
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import guestrun  # noqa: E402
import suite  # noqa: E402
from test_arch import load_run_native  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WL = ROOT / "tests" / "workloads"
REAL = ["real-gcc", "real-perl", "real-xz", "real-sqlite"]


class Manifest(unittest.TestCase):
    def test_the_four_kinds_of_workload_are_benchmarks(self):
        self.assertEqual(bench.manifest_benchmarks((WL / "programs").read_text()), REAL)
        rn = load_run_native()
        self.assertEqual(rn.workload_names(), REAL)

    def test_every_entry_is_an_executable_script_using_lib_sh(self):
        for name in REAL:
            script = WL / name
            self.assertTrue(os.access(script, os.X_OK), f"{script} is not executable")
            text = script.read_text()
            self.assertTrue(text.startswith("#!/bin/sh\n"), name)
            self.assertIn(". /workloads/lib.sh", text, name)
            self.assertIn('echo "result: ', text, name)

    def test_no_name_clashes_with_the_suite(self):
        suite_names = load_run_native().manifest_names(ROOT / "tests" / "guest" / "programs", "all")
        self.assertFalse(set(suite_names) & set(REAL))

    def test_generated_program_is_reproducible(self):
        # The compile's input is generated at build time: the same sources every time.
        outs = []
        for d in ("a", "b"):
            out = Path(self.tmp) / d
            subprocess.run([sys.executable, str(WL / "gen-c-program.py"), str(out)], check=True)
            outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
        self.assertEqual(outs[0], outs[1])
        self.assertGreaterEqual(len([n for n in outs[0] if n.endswith(".c")]), 7)

    def setUp(self):
        import tempfile
        self._td = tempfile.TemporaryDirectory()
        self.tmp = self._td.name

    def tearDown(self):
        self._td.cleanup()


class RunNative(unittest.TestCase):
    def setUp(self):
        self.rn = load_run_native()

    def test_chroot_command_as_root_and_not(self):
        root = Path("/r/root")
        inner = ["/suite/suite-run", "--only", "real-xz"]
        as_root = self.rn.chroot_command(root, inner, as_root=True)
        self.assertEqual(as_root[:4], ["unshare", "--mount", "--fork", "--"])
        user = self.rn.chroot_command(root, inner, as_root=False)
        self.assertEqual(user[:5], ["unshare", "--mount", "--fork", "--map-root-user", "--"])
        # the guest's environment, nothing of the host's (env -i), then the command itself
        i = as_root.index("env")
        self.assertEqual(as_root[i - 1:i + 2], ["/bin/busybox", "env", "-i"])
        self.assertIn("PATH=/bin:/sbin:/usr/bin:/usr/sbin", as_root)
        self.assertEqual(as_root[-3:], inner)
        self.assertIn(str(root), as_root)

    def test_merge_protocol(self):
        t = iter(range(100))
        a = [(next(t), x) for x in ("@@SUITE START programs=1", "@@BEGIN bench-compute",
                                    "result: abc", "@@END bench-compute status=0 guest_ns=5",
                                    "@@SUITE DONE programs=1 failed=0")]
        b = [(next(t), x) for x in ("@@SUITE START programs=2", "@@BEGIN real-xz", "result: x1",
                                    "@@END real-xz status=0 guest_ns=7", "@@BEGIN real-gcc",
                                    "result: FAIL-compile", "@@END real-gcc status=1 guest_ns=9",
                                    "@@SUITE DONE programs=2 failed=1")]
        merged = self.rn.merge_protocol(a, b)
        texts = [x for _, x in merged]
        self.assertEqual(texts.count("@@SUITE START programs=1"), 1)
        self.assertNotIn("@@SUITE START programs=2", texts)
        self.assertEqual(texts[-1], "@@SUITE DONE programs=3 failed=1")
        run = suite.parse(texts)
        self.assertTrue(run["complete"])
        self.assertEqual([p["name"] for p in run["programs"]], ["bench-compute", "real-xz", "real-gcc"])
        # times stay with their lines (host_wall_s comes from them)
        self.assertEqual(merged[4], (6, "@@BEGIN real-xz"))
        # a run cut short keeps what it has, and no invented DONE line
        cut = self.rn.merge_protocol(a, b[:3])
        self.assertFalse(any(x.startswith("@@SUITE DONE") for _, x in cut))

    def test_unknown_program_names_the_option(self):
        r = subprocess.run([str(ROOT / "ci" / "run-native"), "--no-build", "--programs", "real-gcc"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("need --workloads", r.stderr)


class RunGuest(unittest.TestCase):
    def test_paths_and_commands(self):
        self.assertEqual(guestrun.build_workloads_cmd("amd64"),
                         [str(ROOT / "ci" / "build-workloads"), "--arch", "amd64"])

    def test_workloads_refused_with_suite32(self):
        r = subprocess.run([str(ROOT / "ci" / "run-guest"), "--arch", "amd64", "--suite32",
                            "--workloads", "--no-build", "--accel", "off", "--json", "/dev/null"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("does not go with --suite32", r.stderr)


class GuestInit(unittest.TestCase):
    def test_init_appends_the_workloads_manifest(self):
        init = (ROOT / "ci" / "guest" / "init").read_text()
        self.assertIn('cat "$SUITE_DIR/programs" /workloads/programs >/run/programs', init)
        self.assertIn("WORKLOADS=0", init)  # off unless the run spec says so


if __name__ == "__main__":
    unittest.main()
