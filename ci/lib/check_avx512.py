#!/usr/bin/env python3
"""Checks a guest run of the amd64 suite's vector programs under emulated AVX-512 (ci/run-guest
--arch amd64 --cpu-add-features avx512,...): the 512-bit paths ran (avx512-zmm did not report
"not-available"; simd and avx512-zmm saw avx512=yes; avx-preempt used width 512), every program
passed its own checks, and the programs whose result does not depend on the path (simd,
avx-preempt, avx2-ymm, regs64) gave the native oracle's result.

Usage: python3 ci/lib/check_avx512.py NATIVE.json GUEST.json
"""
from __future__ import annotations

import json
import sys

PATH_INDEPENDENT = ("simd", "avx-preempt", "avx2-ymm", "regs64")


def problems(native: dict, guest: dict) -> list[str]:
    out = []
    if not guest.get("complete"):
        out.append("guest run incomplete")
    out += [f"guest: {f}" for f in guest.get("failures") or []]
    p = {x["name"]: x for x in guest.get("programs", [])}
    n = {x["name"]: x for x in native.get("programs", [])}
    for name in ("avx512-zmm", "simd", "avx-preempt"):
        if name not in p:
            out.append(f"{name}: not run")
    if out:
        return out
    r = p["avx512-zmm"].get("result") or ""
    if not r.startswith("avx512-zmm16-31-") or r.endswith("not-available"):
        out.append(f"avx512-zmm: result {r!r}: the zmm16-31 path did not run")
    for name in ("avx512-zmm", "simd"):
        if (p[name].get("cpu") or {}).get("avx512") != "yes":
            out.append(f"{name}: cpu: avx512={(p[name].get('cpu') or {}).get('avx512')}, not yes")
    if (p["avx-preempt"].get("cpu") or {}).get("width") != "512":
        out.append(f"avx-preempt: cpu: width={(p['avx-preempt'].get('cpu') or {}).get('width')}, not 512")
    for name in PATH_INDEPENDENT:
        if name in p and name in n and p[name].get("result") != n[name].get("result"):
            out.append(f"{name}: result {p[name].get('result')} differs from native {n[name].get('result')}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = []
    for path in argv:
        with open(path, encoding="utf-8") as f:
            runs.append(json.load(f))
    probs = problems(*runs)
    for pr in probs:
        print(pr)
    if probs:
        return 1
    names = [x["name"] for x in runs[1].get("programs", [])]
    print(f"the 512-bit paths ran and passed ({', '.join(names)}); path-independent results equal native")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
