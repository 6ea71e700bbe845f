"""Unit tests of the soak test's growth judgement (tests/soak/judge.py), with the bounds the soak
uses: a leaking series must fail, a flat noisy one must pass. Run by tests/soak/run, or
`python3 -m unittest discover -s tests/soak`."""

import random
import unittest

from judge import BOUNDS, judge_growth, least_squares_slope

REPS = 20
WARMUP = 2


def judged(series, who, metric):
    rise_tol, slope_tol, unit = BOUNDS[(who, metric)]
    return judge_growth(series, WARMUP, rise_tol, slope_tol, unit)


class LeastSquaresSlope(unittest.TestCase):
    def test_exact_on_a_line(self):
        self.assertAlmostEqual(least_squares_slope([3 + 0.5 * i for i in range(10)]), 0.5)

    def test_flat_is_zero(self):
        self.assertEqual(least_squares_slope([7, 7, 7, 7]), 0)

    def test_needs_two_values(self):
        with self.assertRaises(ValueError):
            least_squares_slope([1])


class Leaks(unittest.TestCase):
    """Leaks the soak exists to catch."""

    def test_one_fd_per_repetition_fails(self):
        for who in ("bochs", "executor"):
            series = [10 + i for i in range(REPS)]
            self.assertFalse(judged(series, who, "fds").ok, who)

    def test_one_fd_every_other_repetition_fails(self):
        for who in ("bochs", "executor"):
            series = [10 + i // 2 for i in range(REPS)]
            self.assertFalse(judged(series, who, "fds").ok, who)

    def test_fds_stepping_up_after_the_warmup_fail(self):
        # e.g. three fds leaked once, half-way through: caught by the rise bound
        series = [10] * 10 + [13] * 10
        self.assertFalse(judged(series, "bochs", "fds").ok)

    def test_128_kib_per_repetition_fails(self):
        for who in ("bochs", "executor"):
            series = [56.0 + 0.125 * i for i in range(REPS)]
            self.assertFalse(judged(series, who, "RssAnon").ok, who)

    def test_40_kib_per_repetition_fails(self):
        for who in ("bochs", "executor"):
            series = [1.0 + 40 / 1024 * i for i in range(REPS)]
            self.assertFalse(judged(series, who, "RssAnon").ok, who)

    def test_128_kib_leak_under_noise_fails(self):
        rng = random.Random(1)
        series = [56.0 + 0.125 * i + rng.uniform(-0.05, 0.05) for i in range(REPS)]
        self.assertFalse(judged(series, "bochs", "RssAnon").ok)

    def test_leak_starting_late_fails(self):
        # flat for 10 repetitions, then 512 KiB per repetition
        series = [56.0] * 10 + [56.0 + 0.5 * i for i in range(1, 11)]
        self.assertFalse(judged(series, "bochs", "RssAnon").ok)


class NoLeaks(unittest.TestCase):
    """Series a healthy run gives must pass."""

    def test_constant_passes(self):
        self.assertTrue(judged([10] * REPS, "bochs", "fds").ok)
        self.assertTrue(judged([56.63] * REPS, "bochs", "RssAnon").ok)

    def test_growth_during_the_warmup_passes(self):
        self.assertTrue(judged([6, 10] + [10] * (REPS - 2), "bochs", "fds").ok)
        self.assertTrue(judged([40.0, 56.5] + [56.6] * (REPS - 2), "bochs", "RssAnon").ok)

    def test_flat_noisy_fds_pass(self):
        rng = random.Random(2)
        for who in ("bochs", "executor"):
            series = [10 + rng.choice((0, 0, 0, 1)) for _ in range(REPS)]
            self.assertTrue(judged(series, who, "fds").ok, (who, series))

    def test_flat_noisy_memory_passes(self):
        rng = random.Random(3)
        for who in ("bochs", "executor"):
            for _ in range(50):
                series = [1.0 + rng.uniform(-0.25, 0.25) for _ in range(REPS)]
                self.assertTrue(judged(series, who, "RssAnon").ok, (who, series))

    def test_saturating_growth_passes(self):
        # allocator or cache growth that levels off (e.g. +50 KiB, +25 KiB, ...)
        series = [0.9 + 0.1 * (1 - 0.5 ** i) for i in range(REPS)]
        self.assertTrue(judged(series, "executor", "RssAnon").ok, series)

    def test_slowing_growth_of_touched_tables_passes(self):
        # the executor's shadow tables becoming resident: ~0.2 MiB over 20 repetitions, slowing
        series = [0.95 + 0.04 * i ** 0.5 for i in range(REPS)]
        self.assertTrue(judged(series, "executor", "RssAnon").ok, series)


class Usage(unittest.TestCase):
    def test_too_few_values(self):
        with self.assertRaises(ValueError):
            judge_growth([1, 2, 3, 4], 2, 1, 1)

    def test_no_warmup(self):
        with self.assertRaises(ValueError):
            judge_growth([1] * 10, 0, 1, 1)


if __name__ == "__main__":
    unittest.main()
