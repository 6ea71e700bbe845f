"""Tests of the guest-architecture options (--arch i386|amd64) of ci/lib/guestrun.py, ci/lib/bench.py,
ci/run-native and the arch manifests of tests/guest/Makefile.
Run: python3 -m unittest discover -s ci/lib -p 'test_*.py'"""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import check_avx512  # noqa: E402
import guestrun  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path, name: str):
    """An extension-less Python script (ci/run-native, tests/escape/run) loaded as module name."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def load_run_native():
    return load_script(ROOT / "ci" / "run-native", "run_native")


class GuestKernelTest(unittest.TestCase):
    def test_i386_needs_a_kernel_of_its_own(self):
        self.assertEqual(guestrun.guest_kernel("i386", "686"), "686")
        self.assertEqual(guestrun.guest_kernel("i386", "686-pae"), "686-pae")
        with self.assertRaisesRegex(ValueError, "--kernel is required for --arch i386"):
            guestrun.guest_kernel("i386", None)
        with self.assertRaisesRegex(ValueError, "not a kernel of --arch i386"):
            guestrun.guest_kernel("i386", "amd64")

    def test_amd64_defaults_to_its_one_kernel(self):
        self.assertEqual(guestrun.guest_kernel("amd64", None), "amd64")
        self.assertEqual(guestrun.guest_kernel("amd64", "amd64"), "amd64")
        for k in ("686", "686-pae"):
            with self.assertRaisesRegex(ValueError, "not a kernel of --arch amd64"):
                guestrun.guest_kernel("amd64", k)

    def test_layout_keeps_the_i386_paths(self):
        self.assertEqual(guestrun.ARCHES["i386"]["out"], guestrun.TARGET / "guest")
        self.assertEqual(guestrun.ARCHES["amd64"]["out"], guestrun.TARGET / "guest" / "amd64")
        self.assertEqual(guestrun.KERNELS, ("686", "686-pae"))
        self.assertEqual(set(guestrun.ALL_KERNELS), {"686", "686-pae", "amd64"})

    def test_build_guest_cmd(self):
        self.assertEqual(guestrun.build_guest_cmd("i386"), [str(ROOT / "ci" / "build-guest")])
        self.assertEqual(guestrun.build_guest_cmd("amd64")[1:], ["--arch", "amd64"])


class CpuFeaturesTest(unittest.TestCase):
    def test_arg(self):
        import argparse
        self.assertEqual(guestrun.cpu_features_arg("avx512,avx512dq"), "avx512,avx512dq")
        for bad in ("", "avx512,", "a b", 'x"', "avx-512"):
            with self.assertRaises(argparse.ArgumentTypeError):
                guestrun.cpu_features_arg(bad)

    def test_bochsrc_line(self):
        rc = "megs: 512\ncpu: model=host, count=1, ips=1\n"
        self.assertEqual(guestrun.add_cpu_features(rc, None), rc)
        self.assertEqual(guestrun.add_cpu_features(rc, "avx512,avx512bw"),
                         'megs: 512\ncpu: model=host, add_features="avx512,avx512bw", count=1, ips=1\n')
        with self.assertRaises(ValueError):
            guestrun.add_cpu_features("cpu: model=corei7_icelake_u, count=1\n", "avx512")

    def test_template_has_the_line(self):
        text = (guestrun.GUEST_DIR / "bochsrc.in").read_text()
        self.assertIn('add_features="avx512"', guestrun.add_cpu_features(text, "avx512"))


def prog(name, result, **cpu):
    return {"name": name, "status": 0, "result": result, "cpu": cpu}


class CheckAvx512Test(unittest.TestCase):
    NATIVE = {"programs": [prog("simd", "simd-1"), prog("avx-preempt", "ok"), prog("regs64", "r")]}

    def guest(self, zmm="avx512-zmm16-31-abc", width="512", simd="simd-1", avx512="yes"):
        return {"complete": True, "failures": [], "programs": [
            prog("avx512-zmm", zmm, avx512=avx512), prog("simd", simd, avx512=avx512),
            prog("avx-preempt", "ok", width=width), prog("regs64", "r")]}

    def test_good(self):
        self.assertEqual(check_avx512.problems(self.NATIVE, self.guest()), [])

    def test_not_available(self):
        probs = check_avx512.problems(self.NATIVE, self.guest(zmm="avx512-zmm16-31-not-available", avx512="no"))
        self.assertTrue(any("did not run" in p for p in probs))
        self.assertTrue(any("avx512=no" in p for p in probs))

    def test_width_and_native(self):
        probs = check_avx512.problems(self.NATIVE, self.guest(width="256", simd="simd-2"))
        self.assertTrue(any("width=256" in p for p in probs))
        self.assertTrue(any("simd: result simd-2 differs" in p for p in probs))

    def test_incomplete(self):
        g = self.guest()
        g["complete"] = False
        g["failures"] = ["suite incomplete (no @@SUITE DONE)"]
        self.assertEqual(len(check_avx512.problems(self.NATIVE, g)), 2)


class BenchArchTest(unittest.TestCase):
    def test_kernel_defaults(self):
        self.assertEqual(bench.bench_kernel("i386", None), "686-pae")
        self.assertEqual(bench.bench_kernel("i386", "686"), "686")
        self.assertEqual(bench.bench_kernel("amd64", None), "amd64")
        with self.assertRaises(ValueError):
            bench.bench_kernel("amd64", "686-pae")

    def test_qemu_per_arch(self):
        iso, serial = Path("/r/guest.iso"), Path("/r/serial.txt")
        self.assertEqual(bench.qemu_command(iso, serial)[0], "qemu-system-i386")
        cmd = bench.qemu_command(iso, serial, "amd64")
        self.assertEqual(cmd[0], "qemu-system-x86_64")
        self.assertEqual(cmd[1:], bench.qemu_command(iso, serial, "i386")[1:])

    def test_arch_args(self):
        self.assertEqual(bench.arch_args("i386"), [])
        self.assertEqual(bench.arch_args("amd64"), ["--arch", "amd64"])

    def test_usage_error_for_a_foreign_kernel(self):
        r = subprocess.run([sys.executable, str(ROOT / "ci" / "lib" / "bench.py"), "--arch", "amd64",
                            "--kernel", "686", "--no-build"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a kernel of --arch amd64", r.stderr)


class RunNativeArchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rn = load_run_native()

    def elf(self, d, name, cls_, machine):
        p = Path(d) / name
        p.write_bytes(b"\x7fELF" + bytes([cls_]) + b"\x01\x01" + b"\0" * 11 + machine.to_bytes(2, "little"))
        return p

    def test_elf_classes(self):
        with tempfile.TemporaryDirectory() as d:
            i386 = self.elf(d, "a", 1, 3)
            x64 = self.elf(d, "b", 2, 62)
            self.assertTrue(self.rn.is_arch_elf(i386, "i386"))
            self.assertFalse(self.rn.is_arch_elf(i386, "amd64"))
            self.assertTrue(self.rn.is_arch_elf(x64, "amd64"))
            self.assertFalse(self.rn.is_arch_elf(x64, "i386"))
            self.assertTrue(self.rn.is_i386_elf(i386))
            self.assertFalse(self.rn.is_arch_elf(Path(d) / "missing", "amd64"))

    def test_lib_dirs_per_arch(self):
        spec = self.rn.ARCHES["amd64"]
        self.assertEqual(spec["guest"], ROOT / "target/guest/amd64")
        self.assertEqual(spec["triplet"], "x86_64-linux-gnu")
        self.assertEqual(self.rn.ARCHES["i386"]["guest"], ROOT / "target/guest")
        self.assertEqual(self.rn.ARCHES["i386"]["make"], [])
        _, missing = self.rn.guest_lib_dirs("amd64")
        for m in missing:
            self.assertIn(":amd64", m)


class ArchManifestTest(unittest.TestCase):
    """tests/guest/Makefile writes each arch's manifest to $(O)/programs."""

    def manifest(self, arch, src):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "programs").write_text(src)
            (Path(d) / "Makefile").write_text((ROOT / "tests/guest/Makefile").read_text())
            out = Path(d) / "out"
            r = subprocess.run(["make", "-s", "-C", d, f"ARCH={arch}", f"O={out}", f"{out}/programs"],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            return (out / "programs").read_text()

    SRC = ("# header\n"
           "a  correctness static\n"
           "b  correctness dynamic   # i386-only\n"
           "#amd64: c  correctness static\n"
           "#amd64:d correctness static 1 2\n"
           "\n"
           "e  benchmark static 7\n")

    def test_i386_is_the_source(self):
        self.assertEqual(self.manifest("i386", self.SRC), self.SRC)

    def test_amd64_drops_i386_only_and_adds_its_own(self):
        got = self.manifest("amd64", self.SRC)
        entries = [ln.split("#", 1)[0].split() for ln in got.splitlines()]
        entries = [e for e in entries if e]
        self.assertEqual([e[0] for e in entries], ["a", "c", "d", "e"])
        self.assertEqual(entries[2], ["d", "correctness", "static", "1", "2"])

    def test_real_manifest(self):
        src = (ROOT / "tests/guest/programs").read_text()
        names = [ln.split("#", 1)[0].split()[0] for ln in self.manifest("amd64", src).splitlines()
                 if ln.split("#", 1)[0].split()]
        i386 = [ln.split("#", 1)[0].split()[0] for ln in src.splitlines() if ln.split("#", 1)[0].split()]
        self.assertTrue(set(i386) <= set(names))  # every i386 program runs on amd64 too
        for n in ("regs64", "avx512-zmm", "avx2-ymm", "tls-threads", "vsyscall", "mapfixed-high", "thp"):
            self.assertIn(n, names)
            self.assertNotIn(n, i386)


if __name__ == "__main__":
    unittest.main()
