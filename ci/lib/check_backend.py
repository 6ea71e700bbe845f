"""Checks that an accelerated ci/run-guest run used the named executor and ran guest code on it.

  python3 ci/lib/check_backend.py RUN.json "stub executor"
  python3 ci/lib/check_backend.py RUN.json executor

The library names what runs guest code in its start-up log line ("started: stub executor ...")
or, for the stub executor that the default backend starts at the first long-mode entry, in
"long-mode code: started the stub executor ...". The statistics must show native runs on that
executor (`backend_runs`; older statistics without it: any native runs), else the suite could
have passed fully emulated or on the other executor.
"""
import json
import sys
from pathlib import Path

# The statistics' key (`backend_runs`) for each name the log uses.
KEYS = {"executor": "executor", "stub executor": "stub"}


def check(run: dict, backend: str) -> list[str]:
    problems = []
    log = Path(run["bochs_log"]).read_text(errors="replace")
    if f"started: {backend} " not in log and f"started the {backend} " not in log:
        problems.append(f"the Bochs log does not say 'started: {backend}' "
                        f"or 'started the {backend}'")
    stats = run.get("accel_stats") or {}
    by_backend = stats.get("backend_runs")
    if by_backend is not None:
        if not by_backend.get(KEYS[backend]):
            problems.append(f"no native runs on the {backend} in the statistics "
                            f"(backend_runs {by_backend})")
    elif not stats.get("runs"):
        problems.append("no native runs in the statistics")
    if stats.get("failures"):
        problems.append(f"{stats['failures']} accelerator failure(s)")
    return problems


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[2] not in KEYS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path, backend = sys.argv[1], sys.argv[2]
    problems = check(json.loads(Path(path).read_text()), backend)
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        runs = (json.loads(Path(path).read_text()).get("accel_stats") or {}).get("backend_runs")
        print(f"{path}: guest code ran natively on the {backend} (runs by executor: {runs})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
