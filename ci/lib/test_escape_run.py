"""Unit tests of tests/escape/run's comparison with plain Bochs (stdlib unittest; no emulator
is started): which accelerated lines may differ where native code reads S's own pages."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_arch import ROOT, load_script  # noqa: E402

run = load_script(ROOT / "tests" / "escape" / "run", "escape_run")
SAME, STUB_PAGES = run.S_LINES["same"], run.S_LINES["stub-pages"]
PLAIN = ["case: munmap-S ret=0", "case: read-S-after-munmap signal=11", "result: cases=2-aaaa"]
NATIVE_READ = ["case: munmap-S ret=0", "case: read-S-after-munmap signal=0", "result: cases=2-bbbb"]


class SPageMismatchesTest(unittest.TestCase):
    def test_equal_lines_pass(self):
        self.assertEqual(run.s_page_mismatches(PLAIN, PLAIN, SAME), [])

    def test_read_of_s_after_munmap_may_get_the_byte(self):
        self.assertEqual(run.s_page_mismatches(PLAIN, NATIVE_READ, SAME), [])

    def test_read_of_s_after_munmap_allows_no_other_signal(self):
        bad = run.s_page_mismatches(PLAIN, [PLAIN[0], "case: read-S-after-munmap signal=7", PLAIN[2]], SAME)
        self.assertEqual(bad, ["read-S-after-munmap signal: 7 (plain Bochs: 11)"])

    def test_result_hash_must_match_when_no_s_line_differed(self):
        bad = run.s_page_mismatches(PLAIN, PLAIN[:2] + ["result: cases=2-bbbb"], SAME)
        self.assertEqual(len(bad), 1)

    def test_result_case_count_must_match(self):
        bad = run.s_page_mismatches(PLAIN, NATIVE_READ[:2] + ["result: cases=3-bbbb"], SAME)
        self.assertEqual(len(bad), 1)

    def test_other_lines_must_be_plain_bochs(self):
        bad = run.s_page_mismatches(PLAIN, ["case: munmap-S ret=-1"] + NATIVE_READ[1:], SAME)
        self.assertEqual(bad, ["'case: munmap-S ret=0' vs 'case: munmap-S ret=-1'"])

    def test_stub_pages_allowance_does_not_cover_syscall_lines(self):
        self.assertEqual(len(run.s_page_mismatches(PLAIN, NATIVE_READ, STUB_PAGES)), 2)

    def test_stub_pages_allow_what_the_stub_mapping_gives(self):
        plain = ["case: S+0x1000-code read=SIGSEGV/14 jump=SIGSEGV/14", "result: cases=1-aa"]
        native = ["case: S+0x1000-code read=ok:0x55 jump=SIGSEGV/128/addr-0", "result: cases=1-bb"]
        self.assertEqual(run.s_page_mismatches(plain, native, STUB_PAGES), [])
        ran = ["case: S+0x1000-code read=ok:0x55 jump=ok", "result: cases=1-bb"]
        self.assertEqual(run.s_page_mismatches(plain, ran, STUB_PAGES),
                         ["S+0x1000-code jump: ok (plain Bochs: SIGSEGV/14)"])

    def test_line_counts_must_match(self):
        self.assertEqual(len(run.s_page_mismatches(PLAIN, PLAIN[1:], SAME)), 1)


if __name__ == "__main__":
    unittest.main()
