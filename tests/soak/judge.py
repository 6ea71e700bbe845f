"""Growth judgement for the soak test (tests/soak/run): does a per-repetition series grow?

A series has one value per repetition of the workload suite (e.g. the median number of open
file descriptors of Bochs while that repetition ran). The first `warmup` repetitions may grow
freely (caches, allocator arenas and the guest's page cache fill up there). After them the
series must stay flat, by two bounds that each catch a steady leak:

  rise:  max(values after the warm-up) - max(values in the warm-up) <= rise_tol
  slope: least-squares slope of the values after the warm-up, per repetition, <= slope_tol

The rise bound catches a leak that adds up to more than rise_tol over the run; the slope bound
catches a smaller steady leak whose total stays under rise_tol (and is independent of where
the warm-up ended). Noise that goes up and down has a slope near 0 and a bounded rise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Verdict:
    ok: bool
    rise: float
    slope: float
    detail: str


def least_squares_slope(values: list[float]) -> float:
    """Slope of the least-squares line through (i, values[i]), i = 0, 1, ..."""
    n = len(values)
    if n < 2:
        raise ValueError("a slope needs at least 2 values")
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    sxy = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return sxy / sxx


def judge_growth(values: list[float], warmup: int, rise_tol: float, slope_tol: float,
                 unit: str = "") -> Verdict:
    """Judges a per-repetition series (see the module docstring). Needs at least 3 values after
    the warm-up, so that the slope means something."""
    if warmup < 1:
        raise ValueError("warmup must be at least 1 repetition")
    if len(values) < warmup + 3:
        raise ValueError(f"{len(values)} values: need the {warmup} warm-up repetitions and at "
                         "least 3 more")
    base = max(values[:warmup])
    after = values[warmup:]
    rise = max(after) - base
    slope = least_squares_slope(after)
    ok = rise <= rise_tol and slope <= slope_tol
    detail = (f"rise after warm-up {rise:+.3g}{unit} (bound {rise_tol:g}{unit}), "
              f"slope {slope:+.3g}{unit}/repetition (bound {slope_tol:g}{unit})")
    return Verdict(ok, rise, slope, detail)



# (process, metric) -> (rise bound, slope bound per repetition, unit). The values judged are
# tests/soak/run's per-repetition medians of its samples (RssAnon in MiB). Measured on the
# 2-core CI machine, 20 repetitions per kernel (reps 3-20 against reps 1-2):
#   * fds: Bochs 10 and the executor 2 in every repetition (exactly flat).
#   * Bochs RssAnon: flat to the KiB (56.63 MiB).
#   * executor RssAnon: +0.11 to +0.14 MiB in all, slope 5-9 KiB per repetition, slowing down.
#     This is its shadow tables (~21 MiB of zeroed memory indexed by page number, see
#     executor/src/shadow.rs) becoming resident as guest pages at new addresses
#     (address-space randomization) are mirrored; bounded by the tables' size, not a leak.
# The bounds leave 3-7x room over that, and fail on a leak of one fd every few repetitions
# (slope 0.1) or of 32 KiB or more per repetition; a one-time jump of 2 fds or 1 MiB after the
# warm-up fails on the rise.
# The amd64 soak (tests/soak/run --arch amd64, the default backend, 2026-12-04, same machine):
#   * fds: Bochs 12 (the stub's control memfd and RAM duplicate added), today's executor 2
#     (idle: an amd64 guest's user code is all 64-bit), the stub 2; exactly flat.
#   * Bochs RssAnon 63.22-63.27 MiB (+0.04 MiB after the warm-up; the stub's monitor and its
#     mirror record live in Bochs); today's executor 0.27 MiB and the stub 0.00 MiB, flat (the
#     stub's memory is its region and the guest mirrors, all shared: RssShmem 4-95 MiB, up
#     and down with the processes mirrored, printed, not judged).
# The stub gets the executor's bounds.
BOUNDS = {
    ("bochs", "fds"): (1, 0.1, ""),
    ("executor", "fds"): (1, 0.1, ""),
    ("stub", "fds"): (1, 0.1, ""),
    ("bochs", "RssAnon"): (1.0, 1 / 32, " MiB"),
    ("executor", "RssAnon"): (1.0, 1 / 32, " MiB"),
    ("stub", "RssAnon"): (1.0, 1 / 32, " MiB"),
}
