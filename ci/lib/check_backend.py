"""Checks that an accelerated ci/run-guest run used the named executor and ran guest code on it.

  python3 ci/lib/check_backend.py RUN.json "stub executor"

The library names what runs guest code in its start-up log line ("started: stub executor ...");
the statistics must show native runs (else the suite could have passed fully emulated).
"""
import json
import sys
from pathlib import Path


def check(run: dict, backend: str) -> list[str]:
    problems = []
    log = Path(run["bochs_log"]).read_text(errors="replace")
    if f"started: {backend} " not in log:
        problems.append(f"the Bochs log does not say 'started: {backend}'")
    stats = run.get("accel_stats") or {}
    if not stats.get("runs"):
        problems.append("no native runs in the statistics")
    if stats.get("failures"):
        problems.append(f"{stats['failures']} accelerator failure(s)")
    return problems


def main() -> int:
    path, backend = sys.argv[1], sys.argv[2]
    problems = check(json.loads(Path(path).read_text()), backend)
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        print(f"{path}: guest code ran natively on the {backend}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
