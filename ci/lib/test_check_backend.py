"""Unit tests of ci/lib/check_backend.py (stdlib unittest; no emulator is started)."""
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_backend import check  # noqa: E402


class CheckBackendTest(unittest.TestCase):
    def run_with(self, log: str, stats: dict) -> dict:
        d = Path(tempfile.mkdtemp())
        (d / "bochs.log").write_text(log)
        return {"bochs_log": str(d / "bochs.log"), "accel_stats": stats}

    def test_named_backend_with_native_runs_passes(self):
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


if __name__ == "__main__":
    unittest.main()
