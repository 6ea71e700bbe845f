#!/usr/bin/env python3
"""Guest image and guest run helpers (Python 3.11 stdlib only).

Subcommands (used by ci/build-guest and ci/run-guest):
  mkcpio --out FILE [--gzip] [--node PATH:c|b:MAJ:MIN] [--map DEST=SRCDIR]... [--file DEST=SRC]...
      Deterministic newc cpio (uid/gid 0, mtime 0); written only if the content changed.
  mkiso --out FILE --kernel VMLINUZ --initrd NAME=FILE [--initrd ...] --append CMDLINE
      Bootable ISOLINUX ISO with the kernel as /vmlinuz and the initrds at the ISO root.
  run ...   (see ci/run-guest --help)

The guest protocol on the serial console (see ci/guest/init):
  @@INIT uptime=S, @@SUITE START, @@BEGIN name, @@END name status=N guest_ns=N,
  @@SUITE DONE programs=N failed=N, @@SUITE-RUN EXIT status=N,
  @@EXTRA BEGIN uptime=S, @@EXTRA END status=N uptime=S, @@POWEROFF
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import io
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (ci/lib/suite.py: the workload-suite protocol parser)

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = ROOT / "ci" / "guest"
TARGET = ROOT / "target"
GUEST_OUT = TARGET / "guest"
KERNELS = ("686", "686-pae")
# Guest architectures (ci/build-guest --arch): where ci/build-guest puts each one's files, its
# kernel flavours and the flavour --kernel defaults to (None: --kernel is required).
ARCHES = {
    "i386": {"out": GUEST_OUT, "kernels": KERNELS, "default_kernel": None},
    "amd64": {"out": GUEST_OUT / "amd64", "kernels": ("amd64",), "default_kernel": "amd64"},
}
ALL_KERNELS = tuple(k for a in ARCHES.values() for k in a["kernels"])


def guest_kernel(arch: str, kernel: str | None) -> str:
    """The kernel flavour of a run of `arch` (--kernel, else the arch's default); raises
    ValueError with a message when the flavour is missing or belongs to another arch."""
    spec = ARCHES[arch]
    if kernel is None:
        if spec["default_kernel"] is None:
            raise ValueError(f"--kernel is required for --arch {arch} "
                             f"({' or '.join(spec['kernels'])})")
        return spec["default_kernel"]
    if kernel not in spec["kernels"]:
        raise ValueError(f"--kernel {kernel} is not a kernel of --arch {arch} "
                         f"(its kernels: {', '.join(spec['kernels'])})")
    return kernel


def cpu_features_arg(text: str) -> str:
    """argparse type of --cpu-add-features: Bochs CPUID feature names, comma-separated."""
    names = [n for n in text.split(",")]
    if not names or any(not n or not all(c.isascii() and (c.isalnum() or c == "_") for c in n) for n in names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of Bochs feature names")
    return ",".join(names)


def add_cpu_features(bochsrc: str, features: str | None) -> str:
    """The rendered bochsrc with add_features="..." on its `cpu: model=host,` line."""
    if not features:
        return bochsrc
    line = "cpu: model=host,"
    if bochsrc.count(line) != 1:
        raise ValueError("the bochsrc has no single 'cpu: model=host,' line")
    return bochsrc.replace(line, f'{line} add_features="{features}",')


def build_guest_cmd(arch: str) -> list[str]:
    """The ci/build-guest command of an arch (i386: no option, as before --arch existed)."""
    cmd = [str(ROOT / "ci" / "build-guest")]
    return cmd if arch == "i386" else cmd + ["--arch", arch]

ROMIMAGE = "/usr/share/bochs/BIOS-bochs-latest"
VGAROMIMAGE = "/usr/share/vgabios/vgabios.bin"
TIME0 = 1735689600  # 2025-01-01 00:00:00 UTC: fixed, so guest wall-clock is reproducible
IPS = 60000000
MEGS = 512  # guest RAM in MiB, the default of --megs
# --megs range: Bochs's `megs:` sets the host allocation too, which it caps at 2048 MiB; below
# 128 MiB the Debian kernel with its unpacked initramfs (~60 MiB) has too little room.
MEGS_MIN, MEGS_MAX = 128, 2048


def build_workloads_cmd(arch: str) -> list[str]:
    """The ci/build-workloads command line of an arch."""
    return [str(ROOT / "ci" / "build-workloads"), "--arch", arch]


def workloads_img(arch: str) -> Path:
    """The real-workload set's initramfs (ci/build-workloads); dies if it is missing."""
    img = ARCHES[arch]["out"] / "workloads" / "workloads.img"
    if not img.exists():
        die(f"{img} is missing: run ci/build-workloads --arch {arch}")
    return img


def megs_arg(text: str) -> int:
    """argparse type of --megs: guest RAM in MiB, an integer in [MEGS_MIN, MEGS_MAX]."""
    if not text.isascii() or not text.isdigit():  # int() would take " 5", "+5" and "5_12"
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB")
    v = int(text, 10)
    if not MEGS_MIN <= v <= MEGS_MAX:
        raise argparse.ArgumentTypeError(
            f"{v} MiB is out of range: guest RAM must be {MEGS_MIN}-{MEGS_MAX} MiB "
            f"(Bochs allocates at most {MEGS_MAX} MiB)")
    return v


# ---------------------------------------------------------------------------
# newc cpio


class Cpio:
    """Minimal deterministic writer of the newc ("070701") cpio format."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self.seen:
            raise SystemExit(f"mkcpio: duplicate entry {name}")
        self.seen.add(name)
        nb = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
                  0, 0, rdev[0], rdev[1], len(nb), 0)
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(hdr + nb)
        self.buf.write(b"\0" * (-(len(hdr) + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def mkdirs(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.seen:
                self._entry(p, stat.S_IFDIR | 0o755)

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        name = name.strip("/")
        parent = name.rpartition("/")[0]
        if parent:
            self.mkdirs(parent)
        if name not in self.seen:
            self._entry(name, stat.S_IFDIR | perm)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.mkdirs(name.strip("/").rpartition("/")[0])
        self._entry(name, stat.S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        self.mkdirs(name.strip("/").rpartition("/")[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_node(self, name: str, kind: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.mkdirs(name.strip("/").rpartition("/")[0])
        self._entry(name, (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | perm, rdev=(major, minor))

    def add_tree(self, dest: str, src: Path) -> None:
        """Adds src's contents under dest (sorted, symlinks kept as symlinks)."""
        src = Path(src)
        if dest.strip("/"):
            self.add_dir(dest, 0o755)
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            base = dest.strip("/") if rel == "." else f"{dest.strip('/')}/{rel}".strip("/")
            for n in sorted(dirnames + filenames):
                p = os.path.join(dirpath, n)
                name = f"{base}/{n}".strip("/")
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(name, os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    self.add_dir(name, stat.S_IMODE(st.st_mode))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(name, Path(p).read_bytes(), stat.S_IMODE(st.st_mode))
            # os.walk does not descend into symlinked dirs: fine (they were added as symlinks)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self.buf.getvalue()
        return data + b"\0" * (-len(data) % 512)


def write_if_changed(path: Path, data: bytes) -> bool:
    path = Path(path)
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def cmd_mkcpio(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="guestrun.py mkcpio")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--map", action="append", default=[], help="DEST=SRCDIR")
    ap.add_argument("--file", action="append", default=[], help="DEST=SRC[:MODE]")
    ap.add_argument("--node", action="append", default=[], help="PATH:c|b:MAJ:MIN")
    ap.add_argument("--dir", action="append", default=[], help="empty directory PATH[:MODE]")
    a = ap.parse_args(argv)
    c = Cpio()
    for d in a.dir:
        p, _, m = d.partition(":")
        c.add_dir(p, int(m, 8) if m else 0o755)
    for m in a.map:
        dest, _, src = m.partition("=")
        c.add_tree(dest, Path(src))
    for f in a.file:
        dest, _, src = f.partition("=")
        src, _, mode = src.partition(":")
        c.add_file(dest, Path(src).read_bytes(), int(mode, 8) if mode else stat.S_IMODE(os.stat(src).st_mode))
    for n in a.node:
        p, kind, ma, mi = n.split(":")
        c.add_node(p, kind, int(ma), int(mi))
    data = c.finish()
    if a.gzip:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    changed = write_if_changed(Path(a.out), data)
    print(f"{a.out}: {len(data)} bytes{'' if changed else ' (unchanged)'}")
    return 0


# ---------------------------------------------------------------------------
# ISO


def render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    return text


def make_iso(out: Path, kernel: Path, initrds: list[tuple[str, Path]], append: str, cfg_path: Path) -> None:
    """Builds an ISOLINUX ISO with xorriso from explicit graft points (nothing is copied)."""
    isolinux_bin = Path("/usr/lib/ISOLINUX/isolinux.bin")
    ldlinux = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
    cfg = render(GUEST_DIR / "isolinux.cfg.in",
                 {"INITRD": ",".join("/" + n for n, _ in initrds), "APPEND": append})
    write_if_changed(cfg_path, cfg.encode())
    grafts = [f"/isolinux/isolinux.bin={isolinux_bin}", f"/isolinux/ldlinux.c32={ldlinux}",
              f"/isolinux/isolinux.cfg={cfg_path}", f"/vmlinuz={kernel}"]
    grafts += [f"/{n}={p}" for n, p in initrds]
    tmp = out.with_name(out.name + ".tmp")
    cmd = ["xorriso", "-as", "mkisofs", "-quiet", "-o", str(tmp), "-R", "-V", "PLEX86GUEST",
           "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
           "-boot-load-size", "4", "-boot-info-table", "-graft-points"] + grafts
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout)
        raise SystemExit(f"xorriso failed ({r.returncode}) building {out}")
    os.replace(tmp, out)


def cmd_mkiso(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="guestrun.py mkiso")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", action="append", required=True, help="NAME=FILE")
    ap.add_argument("--append", required=True)
    ap.add_argument("--cfg", required=True, help="where to write the rendered isolinux.cfg")
    a = ap.parse_args(argv)
    initrds = [(n, Path(p)) for n, _, p in (x.partition("=") for x in a.initrd)]
    make_iso(Path(a.out), Path(a.kernel), initrds, a.append, Path(a.cfg))
    return 0


# ---------------------------------------------------------------------------
# console parsing


def kv(fields: list[str]) -> dict[str, str]:
    out = {}
    for f in fields:
        k, sep, v = f.partition("=")
        if sep:
            out[k] = v
    return out


def num(v: str | None):
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def parse_suite(lines: list[tuple[float, str]]) -> dict:
    """Parses the @@SUITE part with ci/lib/suite.py, the suite's own parser."""
    run = suite.parse(lines)
    run.pop("noise", None)  # the boot console; the whole log is in serial.txt
    run["problems"] = suite.failures(run)
    return run


# ---------------------------------------------------------------------------
# run


def die(msg: str, code: int = 1) -> "NoReturn":  # noqa: F821
    print(f"run-guest: {msg}", file=sys.stderr)
    raise SystemExit(code)


def build_run_img(out: Path, spec: str, add_dir: Path | None) -> None:
    c = Cpio()
    c.add_dir("run")
    c.add_file("run/spec", spec.encode(), 0o644)
    if add_dir is not None:
        c.add_tree("extra", add_dir)
    else:
        c.add_dir("extra")
    out.write_bytes(c.finish())  # uncompressed: small, and decompression would be emulated


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def boot_and_capture(cmd: list[str], rundir: Path, serial: Path, out_path: Path,
                     timeout: float) -> dict:
    """Runs an emulator (`cmd`, in `rundir`, its own output to `out_path`) whose guest console
    goes to the file `serial`; reads the console as it grows and stamps each line with the host
    time since the start (also written to rundir/console-ts.txt). Stops the emulator on
    `timeout`, 3 s after a kernel panic, or 60 s after the guest said @@POWEROFF without the
    emulator exiting. Returns {"lines": [(seconds, text)], "rc", "wall", "first_byte_s",
    "killed_for" (None or why it was stopped), "panic_at", "poweroff_at"}."""
    out = open(out_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[tuple[float, str]] = []
    ts_log = open(rundir / "console-ts.txt", "w")
    st = {"pending": b"", "pos": 0, "killed_for": None, "panic_at": None, "poweroff_at": None,
          "first_byte_s": None}

    def drain(final: bool = False) -> None:
        try:
            with open(serial, "rb") as f:
                f.seek(st["pos"])
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk and not (final and st["pending"]):
            return
        now = time.monotonic() - t0
        if chunk and st["first_byte_s"] is None:
            st["first_byte_s"] = now
        st["pos"] += len(chunk)
        parts = (st["pending"] + chunk).split(b"\n")
        st["pending"] = parts.pop()
        if final and st["pending"]:
            parts.append(st["pending"])
            st["pending"] = b""
        for raw in parts:
            text = raw.decode("utf-8", "replace").replace("\r", "")
            lines.append((now, text))
            ts_log.write(f"{now:10.3f} {text}\n")
            if st["panic_at"] is None and "Kernel panic - not syncing" in text:
                st["panic_at"] = now
            if st["poweroff_at"] is None and "@@POWEROFF" in text:
                st["poweroff_at"] = now
        ts_log.flush()

    def stop(reason: str) -> None:
        st["killed_for"] = reason
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    try:
        while True:
            drain()
            if proc.poll() is not None:
                break
            now = time.monotonic() - t0
            if now > timeout:
                stop("timeout")
                break
            if st["panic_at"] is not None and now - st["panic_at"] > 3:
                stop("kernel-panic")
                break
            if st["poweroff_at"] is not None and now - st["poweroff_at"] > 60:
                stop("poweroff-hang")
                break
            time.sleep(0.01)
    except KeyboardInterrupt:
        stop("interrupted")
    rc = proc.wait()
    wall = time.monotonic() - t0
    drain(final=True)
    ts_log.close()
    out.close()
    return {"lines": lines, "rc": rc, "wall": wall, "first_byte_s": st["first_byte_s"],
            "killed_for": st["killed_for"], "panic_at": st["panic_at"],
            "poweroff_at": st["poweroff_at"]}


def cmd_run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ci/run-guest",
                                 description="Boot the test guest in Bochs and run suite programs.")
    ap.add_argument("--arch", choices=tuple(ARCHES), default="i386",
                    help="guest architecture (default i386; amd64: the 64-bit guest of ci/build-guest --arch amd64)")
    ap.add_argument("--kernel", choices=ALL_KERNELS,
                    help="kernel flavour: 686 or 686-pae (i386, required), amd64 (amd64, the default)")
    ap.add_argument("--accel", choices=("on", "off"), required=True)
    ap.add_argument("--programs", help="list passed to suite-run --only; 'none' skips the suite")
    ap.add_argument("--suite32", action="store_true",
                    help="amd64: run the i386 suite's static programs (/suite32: 32-bit processes, "
                         "compatibility mode) instead of the x86-64 suite; their native oracle is "
                         "ci/run-native's i386 results. On AMD hosts add --append clearcpuid=110: the "
                         "guest kernel's 32-bit vDSO then uses INT 0x80, not SYSCALL (its "
                         "SYSCALL32 feature, bit 3*32+14), which the host CPU model leaves out "
                         "in 32-bit code (#UD, SIGILL) and native code could not hand back "
                         "(on Intel hosts its SYSENTER is carried out by Bochs)")
    ap.add_argument("--workloads", action="store_true",
                    help="also the real-workload set (tests/workloads: gcc, perl, xz, sqlite; "
                         "ci/build-workloads): its programs follow the suite's, and --programs "
                         "may name them")
    ap.add_argument("--add", metavar="DIR", help="directory copied to /extra in the guest")
    ap.add_argument("--run", metavar="CMD", help="command run as `cd /extra && sh -c CMD` after the suite")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--megs", type=megs_arg, default=MEGS, metavar="N",
                    help=f"guest RAM in MiB, {MEGS_MIN}-{MEGS_MAX} (default {MEGS}; from 512 on Debian's kernel "
                         "turns transparent huge pages on)")
    ap.add_argument("--json", required=True, metavar="OUT")
    ap.add_argument("--bochs", help="Bochs binary to use (default target/bochs/plain/bochs)")
    ap.add_argument("--append", default="", help="extra kernel command-line arguments")
    ap.add_argument("--accel-options", default="", metavar="K=V,...",
                    help="extra keys of the bochsrc plex86accel: line (with --accel on), e.g. min_user_insns=200")
    ap.add_argument("--cpu-add-features", type=cpu_features_arg, metavar="F,...",
                    help="Bochs CPUID features added to the host model (add_features=), e.g. "
                         "avx512,avx512dq,avx512cd,avx512bw to emulate AVX-512 on a host without it")
    ap.add_argument("--no-build", action="store_true", help="don't call ci/build-bochs / ci/build-guest")
    ap.add_argument("--keep-iso", action="store_true",
                    help="keep the run's guest.iso after a completed run (it is always kept otherwise)")
    a = ap.parse_args(argv)
    try:
        a.kernel = guest_kernel(a.arch, a.kernel)
    except ValueError as err:
        ap.error(str(err))
    guest_out = ARCHES[a.arch]["out"]

    if a.add and not a.run:
        die("--add needs --run CMD", 2)
    if a.suite32 and a.arch != "amd64":
        die("--suite32 needs --arch amd64 (the i386 guest runs the i386 suite itself)", 2)
    if a.suite32 and a.workloads:
        die("--workloads runs the guest's own architecture's set; it does not go with --suite32", 2)
    add_dir = Path(a.add).resolve() if a.add else None
    if add_dir is not None and not add_dir.is_dir():
        die(f"--add {a.add}: not a directory", 2)

    variant = "accel" if a.accel == "on" else "plain"
    bochs = Path(a.bochs).resolve() if a.bochs else TARGET / "bochs" / variant / "bochs"
    if not a.no_build:
        steps = [] if a.bochs else [[str(ROOT / "ci" / "build-bochs"), "--variant", variant]]
        if a.accel == "on":
            steps.append(["cargo", "build", "--release", "-q", "-p", "accel-core", "--lib"])
            steps.append(["cargo", "build", "--release", "-q", "-p", "plex86-executor"])
        steps.append(build_guest_cmd(a.arch))
        if a.workloads:
            steps.append(build_workloads_cmd(a.arch))
        for cmd in steps:  # each is idempotent and fast when nothing changed
            r = subprocess.run(cmd, stdout=sys.stderr, cwd=ROOT)
            if r.returncode != 0:
                die(f"{' '.join(cmd)} failed ({r.returncode})")
    accel_line = "# plex86accel: off (plain Bochs)"
    stats_json = None
    if a.accel == "on":
        library = TARGET / "release" / "libplex86_accel.so"
        if not library.exists():
            die(f"{library} is missing: run cargo build --release -p accel-core")
        accel_line = f'plex86accel: enabled=1, library="{library}"'
        if a.accel_options:
            accel_line += ", " + a.accel_options
    if not os.access(bochs, os.X_OK):
        die(f"no Bochs binary at {bochs}")
    base_img = guest_out / "iso" / "base.img"
    vmlinuz = guest_out / "iso" / f"vmlinuz-{a.kernel}"
    for p in (base_img, vmlinuz, guest_out / "cmdline"):
        if not p.exists():
            die(f"{p} is missing: run ci/build-guest" + ("" if a.arch == "i386" else f" --arch {a.arch}"))
    append = (guest_out / "cmdline").read_text().strip()
    if f"tsc_early_khz={IPS // 1000}" not in append.split():
        print(f"run-guest: warning: kernel cmdline lacks tsc_early_khz={IPS // 1000} (= ips/1000): "
              "guest clocks will not match instructions/ips", file=sys.stderr)
    if a.append:
        append += " " + a.append

    run_id = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{a.kernel}-{os.getpid()}"
    rundir = TARGET / "run" / run_id
    rundir.mkdir(parents=True)

    # --- the run specification and per-run ISO
    t_iso0 = time.monotonic()
    progs = a.programs
    spec = ["# written by ci/run-guest"]
    if a.suite32:
        spec.append("SUITE_DIR=/suite32")
    initrds = [("base.img", base_img)]
    if a.workloads:
        spec.append("WORKLOADS=1")
        initrds.append(("workloads.img", workloads_img(a.arch)))
    if progs is not None and progs.strip().lower() == "none":
        spec.append("SUITE=0")
    else:
        spec.append("SUITE=1")
        spec.append(f"SUITE_ONLY={shlex.quote(progs or '')}")
    if a.run is not None:
        spec += ["RUN=1", f"RUN_CMD={shlex.quote(a.run)}"]
    run_img = rundir / "run.img"
    build_run_img(run_img, "\n".join(spec) + "\n", add_dir)
    iso = rundir / "guest.iso"
    make_iso(iso, vmlinuz, initrds + [("run.img", run_img)], append, rundir / "isolinux.cfg")
    iso_s = time.monotonic() - t_iso0

    serial = rundir / "serial.txt"
    log = rundir / "bochs.log"
    rc_path = rundir / "bochsrc"
    if a.accel == "on":
        stats_json = rundir / "accel-stats.json"
        accel_line += f', stats="{stats_json}"'
    rc_path.write_text(add_cpu_features(render(GUEST_DIR / "bochsrc.in", {
        "MEGS": str(a.megs), "ROMIMAGE": ROMIMAGE, "VGAROMIMAGE": VGAROMIMAGE, "IPS": str(IPS),
        "TIME0": str(TIME0), "ISO": str(iso), "SERIAL": str(serial), "LOG": str(log),
        "MSRS": str(GUEST_DIR / "msrs.def"), "PLEX86ACCEL": accel_line}), a.cpu_add_features))
    for fw in (ROMIMAGE, VGAROMIMAGE):
        if not Path(fw).exists():
            die(f"BIOS image {fw} missing (Debian packages bochsbios, vgabios; ci/build-guest installs them)")

    # --- boot
    print(f"run-guest: {a.kernel} in {bochs} (run dir {rundir})", file=sys.stderr)
    cap = boot_and_capture([str(bochs), "-q", "-f", str(rc_path)], rundir, serial,
                           rundir / "bochs.out", a.timeout)
    lines, rc, wall = cap["lines"], cap["rc"], cap["wall"]
    killed_for, panic_at, first_byte_s = cap["killed_for"], cap["panic_at"], cap["first_byte_s"]

    # --- results
    logtext = log.read_text(errors="replace") if log.exists() else ""
    # Bochs reports the ACPI soft-off as a PANIC-level event and exits with status 1.
    panics = [ln for ln in logtext.splitlines() if ">>PANIC<<" in ln]
    soft_off = any("soft power off" in ln for ln in panics)
    bochs_panic = any("soft power off" not in ln for ln in panics)
    init_line = next(((t, s[s.index("@@INIT"):]) for t, s in lines if "@@INIT" in s), None)
    if killed_for == "timeout":
        reason = "timeout"
    elif panic_at is not None:
        reason = "kernel-panic"
    elif killed_for is None and soft_off and not bochs_panic:
        reason = "poweroff"  # exit status 1 is what Bochs 3.0 gives after an ACPI soft-off
    else:
        reason = "bochs-error"

    parsed = parse_suite(lines)
    suite_requested = not (progs or "").strip().lower() == "none"
    result: dict = {
        "system": "bochs",
        "arch": a.arch,
        "kernel": a.kernel,
        "accel": a.accel,
        "megs": a.megs,
        "cpu_add_features": a.cpu_add_features,
        "bochs": str(bochs),
        "run_dir": str(rundir),
        "cmdline": append,
        "boot": {
            "guest_uptime_s": float(kv(init_line[1].split()[1:]).get("uptime", "nan")) if init_line else None,
            "host_wall_s": round(init_line[0], 3) if init_line else None,
            "host_wall_first_serial_s": round(first_byte_s, 3) if first_byte_s is not None else None,
        },
        "run_iso_s": round(iso_s, 3),
        "host_wall_s": round(wall, 3),
        "bochs_exit": rc,
        "stop_reason": reason,
        "complete": parsed["complete"] if suite_requested else reason == "poweroff",
        # without the suite (--programs none) its absence is no failure
        "failures": list(parsed["problems"]) if suite_requested else [],
        "suite": {"requested": suite_requested,
                  "done": parsed["done"], "summary": parsed["summary"],
                  "problems": parsed["problems"] if suite_requested else []},
        "programs": parsed["programs"],
        "console": str(serial),
        "console_timestamped": str(rundir / "console-ts.txt"),
        "bochs_log": str(log),
    }
    if stats_json is not None:
        try:
            result["accel_stats"] = json.loads(stats_json.read_text())
        except (OSError, ValueError) as err:
            result["accel_stats"] = None
            result["failures"].append(f"accelerator statistics unreadable: {err}")
    for p in result["programs"]:
        out_lines = p.pop("output", [])
        p["output_tail"] = out_lines[-20:]
    if reason == "bochs-error":
        result["bochs_log_tail"] = tail(log) + ("\n" + tail(rundir / "bochs.out", 10))
    if a.run is not None:
        b = next(((i, t, s[s.index("@@EXTRA BEGIN"):]) for i, (t, s) in enumerate(lines)
                  if "@@EXTRA BEGIN" in s), None)
        e = next(((i, t, s[s.index("@@EXTRA END"):]) for i, (t, s) in enumerate(lines)
                  if "@@EXTRA END" in s), None)
        extra = {"cmd": a.run, "add": str(add_dir) if add_dir else None, "done": e is not None}
        if b:
            stop_i = e[0] if e else len(lines)
            extra["output"] = "\n".join(s for _, s in lines[b[0] + 1:stop_i])
        if e:
            ef = kv(e[2].split()[2:])
            extra["status"] = num(ef.get("status"))
            if b:
                extra["host_wall_s"] = round(e[1] - b[1], 3)
                bu, eu = num(kv(b[2].split()[2:]).get("uptime")), num(ef.get("uptime"))
                if isinstance(bu, (int, float)) and isinstance(eu, (int, float)):
                    extra["guest_s"] = round(eu - bu, 2)
        result["extra"] = extra

    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")

    problems = []
    if reason != "poweroff":
        problems.append(f"stop_reason={reason}")
    if result["suite"]["requested"] and not parsed["done"]:
        problems.append("suite did not finish (no @@SUITE DONE)")
    if a.run is not None and not result["extra"]["done"]:
        problems.append("extra command did not finish (no @@EXTRA END)")
    if problems:
        print(f"run-guest: incomplete run: {'; '.join(problems)} (see {rundir})", file=sys.stderr)
        return 1
    if not a.keep_iso:
        iso.unlink(missing_ok=True)  # ~25 MB, rebuilt in ~0.1 s from run.img + the base files
    summ = parsed["summary"] or {}
    print(f"run-guest: done in {wall:.1f} s (boot {result['boot']['host_wall_s']} s host, "
          f"programs={summ.get('programs')} failed={summ.get('failed')}); JSON in {a.json}", file=sys.stderr)
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    sub, argv = sys.argv[1], sys.argv[2:]
    if sub == "mkcpio":
        return cmd_mkcpio(argv)
    if sub == "mkiso":
        return cmd_mkiso(argv)
    if sub == "run":
        return cmd_run(argv)
    print(f"unknown subcommand {sub}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
