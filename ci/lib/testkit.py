"""What the end-to-end runners tests/*/run share: counting checks, quoting output, the host CPU
as /proc/cpuinfo describes it, and a minimal bochsrc that boots the BIOS with no boot device.

A runner imports it as it imports guestrun (ci/lib on sys.path):

    sys.path.insert(0, str(ROOT / "ci" / "lib"))
    import testkit  # noqa: E402
    CHECKS = testkit.Checks()
    check = CHECKS.check
    ...
    return CHECKS.summary()   # "N checks passed, N failed", exit status 1 if any failed

Tests: ci/lib/test_testkit.py.  Python 3.11 standard library only.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guestrun import ROMIMAGE, TIME0, VGAROMIMAGE  # noqa: E402,F401  (re-exported for runners)

CPUINFO = Path("/proc/cpuinfo")
# Guest instructions per emulated second of the BIOS-only runs (the guest boots use guestrun.IPS).
BIOS_IPS = 10000000


class Checks:
    """Counts checks and prints one line per check, flushed (a runner's output interleaves with
    its children's). style "detail" (the default) prints a failure's detail indented on the
    next line and nothing on success; "inline" (tests/soak/run) prints "ok: what (detail)" and
    "FAILED: what: detail"."""

    def __init__(self, style: str = "detail", out: TextIO | None = None) -> None:
        if style not in ("detail", "inline"):
            raise ValueError(f"Checks: unknown style {style!r}")
        self.style = style
        self.out = out
        self.passed = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        print(text, file=self.out if self.out is not None else sys.stdout, flush=True)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        """Records and prints the check `what`; returns ok (truthy values count as passed)."""
        ok = bool(ok)
        with self._lock:
            if ok:
                self.passed += 1
            else:
                self.failures.append(what)
            if self.style == "inline":
                if ok:
                    self._print(f"ok: {what}" + (f" ({detail})" if detail else ""))
                else:
                    self._print(f"FAILED: {what}" + (f": {detail}" if detail else ""))
            elif ok:
                self._print(f"ok: {what}")
            else:
                self._print(f"FAIL: {what}" + (f"\n      {detail}" if detail else ""))
        return ok

    def summary(self, blank_line: bool = True) -> int:
        """Prints "N checks passed, N failed" (after a blank line unless told not to) and the
        failed checks; returns the exit status: 1 if any failed, else 0."""
        with self._lock:
            self._print(("\n" if blank_line else "")
                        + f"{self.passed} checks passed, {len(self.failures)} failed")
            for f in self.failures:
                self._print(f"failed: {f}")
            return 1 if self.failures else 0


def last_lines(text: str, n: int = 6) -> str:
    """The last n lines of text (surrounding blank space stripped), indented to follow a
    check's detail line."""
    return "\n      ".join(text.strip().splitlines()[-n:])


def run_output(cmd: list[str], env: dict | None = None, cwd: Path | None = None,
               timeout: float = 120) -> tuple[int, str]:
    """Runs cmd with stderr merged into stdout: (exit status, output); on a timeout the process
    is killed and the result is (-1, what it printed + "\\n(timeout)")."""
    try:
        r = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env, cwd=cwd, errors="replace")
        return r.returncode, r.stdout
    except subprocess.TimeoutExpired as t:
        # The output so far is bytes here even with text=True (subprocess captures it raw).
        out = t.stdout or b""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return -1, out + "\n(timeout)"


# ---- the host CPU (/proc/cpuinfo: the host kernel's view, the oracle of several checks) ------

def cpuinfo(path: Path = CPUINFO) -> dict[str, str]:
    """The fields of the first CPU in /proc/cpuinfo ("vendor_id", "model name", "flags", ...)."""
    info: dict[str, str] = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if not k:
            if info:
                break
            continue
        info.setdefault(k, v.strip())
    return info


def host_flags(path: Path = CPUINFO) -> set[str]:
    """The first CPU's flags: what the host kernel says native code can use."""
    return set(cpuinfo(path).get("flags", "").split())


def host_vendor(path: Path = CPUINFO) -> str:
    """The raw vendor_id ("GenuineIntel", "AuthenticAMD", ...), or "?" if there is none."""
    return cpuinfo(path).get("vendor_id") or "?"


def vendor_short(path: Path = CPUINFO) -> str:
    """"amd" or "intel"; another vendor_id as it is, "unknown" if there is none."""
    v = cpuinfo(path).get("vendor_id")
    if not v:
        return "unknown"
    return {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(v, v)


# ---- a BIOS-only Bochs ------------------------------------------------------------------------

def bios_rc_text(megs: int = 64, model: str = "host") -> str:
    """A bochsrc with the BIOS and no boot device (Bochs stops at the BIOS's "No bootable
    device" panic after a few seconds). model "": no model key, as in a hand-written bochsrc
    (Bochs's default CPU)."""
    model_key = f"model={model}, " if model else ""
    return f"""megs: {megs}
romimage: file={ROMIMAGE}
vgaromimage: file={VGAROMIMAGE}
cpu: {model_key}count=1, ips={BIOS_IPS}
clock: sync=none, time0={TIME0}
display_library: nogui
log: -
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
"""


def bios_rc(directory: Path, megs: int = 64, model: str = "host") -> Path:
    """bios_rc_text written to directory/bochsrc-bios-MEGS-MODEL; returns its path."""
    rc = Path(directory) / f"bochsrc-bios-{megs}-{model or 'default'}"
    rc.write_text(bios_rc_text(megs, model))
    return rc
