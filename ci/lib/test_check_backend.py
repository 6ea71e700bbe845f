"""Unit tests of ci/lib/check_backend.py (stdlib unittest; no emulator is started)."""
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_backend import check, check_compat  # noqa: E402

DEFAULT_START = ("i[PLEX86] started: executor next to the library (pid 1) for 32-bit code; "
                 "for long-mode code (64-bit and compatibility mode) the stub executor at the first long-mode entry\n")
STUB_STARTED = "i[PLEX86] long-mode code: started the stub executor next to the library (pid 2)\n"


class CheckBackendTest(unittest.TestCase):
    def run_with(self, log: str, stats: dict) -> dict:
        d = Path(tempfile.mkdtemp())
        (d / "bochs.log").write_text(log)
        return {"bochs_log": str(d / "bochs.log"), "accel_stats": stats}

    def test_named_backend_with_native_runs_passes(self):
        run = self.run_with("i[PLEX86] started: stub executor next to the library (pid 1)\n",
                            {"runs": 5, "failures": 0, "backend_runs": {"executor": 0, "stub": 5}})
        self.assertEqual(check(run, "stub executor"), [])

    def test_statistics_without_backend_runs_need_any_native_runs(self):
        run = self.run_with("i[PLEX86] started: stub executor next to the library (pid 1)\n",
                            {"runs": 5, "failures": 0})
        self.assertEqual(check(run, "stub executor"), [])

    def test_other_backend_emulated_only_or_failed_is_named(self):
        run = self.run_with("i[PLEX86] started: executor next to the library (pid 1)\n",
                            {"runs": 0, "failures": 2})
        problems = check(run, "stub executor")
        self.assertEqual(len(problems), 3, problems)
        self.assertEqual(check(self.run_with("", {}), "executor")[1],
                         "no native runs in the statistics")

    def test_default_backend_proves_the_stub_by_its_start_and_its_runs(self):
        stats = {"runs": 4003, "failures": 0, "backend_runs": {"executor": 0, "stub": 4003}}
        run = self.run_with(DEFAULT_START + STUB_STARTED, stats)
        self.assertEqual(check(run, "stub executor"), [])
        # The start-up line alone ("... the stub executor at the first long-mode entry") does
        # not count: the stub must have started.
        self.assertEqual(len(check(self.run_with(DEFAULT_START, stats), "stub executor")), 1)

    def test_runs_on_the_other_executor_do_not_count(self):
        stats = {"runs": 70, "failures": 0, "backend_runs": {"executor": 70, "stub": 0}}
        problems = check(self.run_with(DEFAULT_START + STUB_STARTED, stats), "stub executor")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("no native runs on the stub executor", problems[0])
        self.assertEqual(check(self.run_with(DEFAULT_START, stats), "executor"), [])

    def test_compat_needs_compat_runs_and_no_compat_decline(self):
        ok = {"compat_runs": 12, "declines": {"long_mode_compat": 0, "short_burst": 3}}
        self.assertEqual(check_compat({"accel_stats": ok}), [])
        none = {"compat_runs": 0, "declines": {"long_mode_compat": 4}}
        problems = check_compat({"accel_stats": none})
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("4 long_mode_compat decline(s)", problems[1])
        self.assertEqual(len(check_compat({"accel_stats": {"runs": 9}})), 1, "older statistics")


if __name__ == "__main__":
    unittest.main()
