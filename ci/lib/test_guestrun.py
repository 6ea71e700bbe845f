"""Tests of ci/lib/guestrun.py's argument checks.  Run: python3 -m unittest discover -s ci/lib -p 'test_*.py'"""
import argparse
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guestrun  # noqa: E402


class MegsTest(unittest.TestCase):
    def test_accepts_the_range(self):
        for text, v in (("128", 128), ("512", 512), ("1024", 1024), ("2048", 2048), ("0768", 768)):
            self.assertEqual(guestrun.megs_arg(text), v)

    def test_rejects_out_of_range(self):
        for text in ("0", "64", "127", "2049", "4096"):
            with self.assertRaisesRegex(argparse.ArgumentTypeError, "out of range"):
                guestrun.megs_arg(text)

    def test_rejects_non_numbers(self):
        for text in ("", "abc", "1G", "1024M", "-512", "+512", " 512", "5_12", "0x200", "512.0", "١٠٢٤"):
            with self.assertRaisesRegex(argparse.ArgumentTypeError, "not a whole number"):
                guestrun.megs_arg(text)

    def test_default_is_512(self):
        self.assertEqual(guestrun.MEGS, 512)


if __name__ == "__main__":
    unittest.main()
