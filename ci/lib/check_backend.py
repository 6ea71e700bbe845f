"""Checks that an accelerated ci/run-guest run used the named executor and ran guest code on it.

  python3 ci/lib/check_backend.py RUN.json "stub executor" [--compat]
  python3 ci/lib/check_backend.py RUN.json executor

The library names what runs guest code in its start-up log line ("started: stub executor ...")
or, for the stub executor that the default backend starts at the first long-mode entry, in
"long-mode code: started the stub executor ...". The statistics must show native runs on that
executor (`backend_runs`; older statistics without it: any native runs), else the suite could
have passed fully emulated or on the other executor. With --compat the statistics must also
show native runs of compatibility-mode code (`compat_runs`) and no `long_mode_compat` decline.
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


def check_compat(run: dict) -> list[str]:
    """With --compat: compatibility-mode code (32-bit processes of a 64-bit guest) ran natively
    (`compat_runs`) and none of it was declined for its mode (`long_mode_compat`)."""
    stats = run.get("accel_stats") or {}
    problems = []
    if not stats.get("compat_runs"):
        problems.append(f"no native runs of compatibility-mode code (compat_runs "
                        f"{stats.get('compat_runs')})")
    declined = (stats.get("declines") or {}).get("long_mode_compat")
    if declined:
        problems.append(f"{declined} long_mode_compat decline(s)")
    return problems


def main() -> int:
    args = sys.argv[1:]
    compat = "--compat" in args
    if compat:
        args.remove("--compat")
    if len(args) != 2 or args[1] not in KEYS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    path, backend = args
    run = json.loads(Path(path).read_text())
    problems = check(run, backend) + (check_compat(run) if compat else [])
    for p in problems:
        print(f"{path}: {p}")
    if not problems:
        runs = (json.loads(Path(path).read_text()).get("accel_stats") or {}).get("backend_runs")
        print(f"{path}: guest code ran natively on the {backend} (runs by executor: {runs})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
