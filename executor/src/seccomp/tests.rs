//! The filter's decisions, by interpreting the compiled program.

use super::*;

fn data(arch: u32, nr: u32, ip: u64, args: [u64; 6]) -> SeccompData {
    SeccompData { nr, arch, ip, args }
}

const HI: u64 = 0x5555_0000_1000;

#[test]
fn filter_decisions_table() {
    let prog = build_filter(POLICY);
    assert!(prog.len() < 200);
    let anon = u64::MAX; // fd -1
    let cases: &[(SeccompData, u32, &str)] = &[
        (
            data(AUDIT_ARCH_I386, 20, 0x1000, [0; 6]),
            RET_TRAP,
            "i386 getpid from guest",
        ),
        (
            data(AUDIT_ARCH_I386, 1, HI, [0; 6]),
            RET_TRAP,
            "i386 from 64-bit code",
        ),
        (
            data(0x4000_0028, 0, HI, [0; 6]),
            RET_KILL_PROCESS,
            "arm arch",
        ),
        (
            data(AUDIT_ARCH_X86_64, 39, 0x40_1000, [0; 6]),
            RET_TRAP,
            "64-bit getpid below 4G",
        ),
        (
            data(AUDIT_ARCH_X86_64, 202, 0xffff_f000, [0; 6]),
            RET_TRAP,
            "futex below 4G",
        ),
        (data(AUDIT_ARCH_X86_64, 202, HI, [0; 6]), RET_ALLOW, "futex"),
        (
            data(AUDIT_ARCH_X86_64, 15, HI, [0; 6]),
            RET_ALLOW,
            "rt_sigreturn",
        ),
        (
            data(AUDIT_ARCH_X86_64, 0x4000_0000 + 202, HI, [0; 6]),
            RET_KILL_PROCESS,
            "x32",
        ),
        (
            data(AUDIT_ARCH_X86_64, 39, HI, [0; 6]),
            RET_KILL_PROCESS,
            "getpid",
        ),
        (
            data(AUDIT_ARCH_X86_64, 257, HI, [0; 6]),
            RET_KILL_PROCESS,
            "openat",
        ),
        (
            data(AUDIT_ARCH_X86_64, 41, HI, [0; 6]),
            RET_KILL_PROCESS,
            "socket",
        ),
        (
            data(AUDIT_ARCH_X86_64, 56, HI, [0; 6]),
            RET_KILL_PROCESS,
            "clone",
        ),
        (
            data(AUDIT_ARCH_X86_64, 59, HI, [0; 6]),
            RET_KILL_PROCESS,
            "execve",
        ),
        (
            data(AUDIT_ARCH_X86_64, 1, HI, [2, 0, 0, 0, 0, 0]),
            RET_KILL_PROCESS,
            "write",
        ),
        (
            data(
                AUDIT_ARCH_X86_64,
                9,
                HI,
                [0x40_0000, 4096, 7, 0x11, 3, 0x5000],
            ),
            RET_ALLOW,
            "mmap ram fd",
        ),
        (
            data(
                AUDIT_ARCH_X86_64,
                9,
                HI,
                [0x1000, 0xffff_f000, 0, 0x4032, anon, 0],
            ),
            RET_ALLOW,
            "mmap reserve",
        ),
        (
            data(AUDIT_ARCH_X86_64, 9, HI, [HI, 4096, 7, 0x22, anon, 0]),
            RET_KILL_PROCESS,
            "mmap above 4G",
        ),
        (
            data(
                AUDIT_ARCH_X86_64,
                9,
                HI,
                [0x1000, 1 << 33, 7, 0x22, anon, 0],
            ),
            RET_KILL_PROCESS,
            "mmap huge length",
        ),
        (
            data(AUDIT_ARCH_X86_64, 9, HI, [0x1000, 4096, 7, 0x11, 4, 0]),
            RET_KILL_PROCESS,
            "mmap control fd",
        ),
        (
            data(AUDIT_ARCH_X86_64, 10, HI, [0x1000, 4096, 1, 0, 0, 0]),
            RET_ALLOW,
            "mprotect",
        ),
        (
            data(AUDIT_ARCH_X86_64, 10, HI, [HI, 4096, 7, 0, 0, 0]),
            RET_KILL_PROCESS,
            "mprotect hi",
        ),
        (
            data(AUDIT_ARCH_X86_64, 154, HI, [0x11, 0, 16, 0, 0, 0]),
            RET_ALLOW,
            "modify_ldt w",
        ),
        (
            data(AUDIT_ARCH_X86_64, 154, HI, [0, 0, 16, 0, 0, 0]),
            RET_KILL_PROCESS,
            "modify_ldt r",
        ),
        (
            data(AUDIT_ARCH_X86_64, 223, HI, [0; 6]),
            RET_ALLOW,
            "timer_settime",
        ),
        (
            data(AUDIT_ARCH_X86_64, 224, HI, [0; 6]),
            RET_ALLOW,
            "timer_gettime",
        ),
        (
            data(AUDIT_ARCH_X86_64, 228, HI, [0; 6]),
            RET_ALLOW,
            "clock_gettime",
        ),
        (
            data(AUDIT_ARCH_X86_64, 231, HI, [0; 6]),
            RET_ALLOW,
            "exit_group",
        ),
        (data(AUDIT_ARCH_X86_64, 60, HI, [0; 6]), RET_ALLOW, "exit"),
        (
            data(AUDIT_ARCH_X86_64, 62, HI, [0; 6]),
            RET_KILL_PROCESS,
            "kill",
        ),
    ];
    for (d, want, what) in cases {
        assert_eq!(evaluate(&prog, d), Some(*want), "{what}");
    }
}

/// The edges of rule 3 and of the mmap/mprotect range checks.
#[test]
fn boundary_decisions() {
    let prog = build_filter(POLICY);
    const G4: u64 = 1 << 32;
    let anon = u64::MAX;
    // A system call instruction reports the address after it. One that starts in guest
    // memory (below 4 GiB) ends at most 15 bytes later (prefixes included): 2-byte
    // `syscall` at 0xfffffffe / 0xffffffff reports 4G / 4G+1; a 15-byte prefixed one at
    // 0xffffffff reports 4G+14. All of them must trap, even for allowlisted numbers.
    for (ip, want) in [
        (0xffff_fffe, RET_TRAP),
        (0xffff_ffff, RET_TRAP),
        (G4, RET_TRAP),
        (G4 + 1, RET_TRAP),
        (G4 + 2, RET_TRAP),
        (G4 + 14, RET_TRAP),
        (G4 + 15, RET_ALLOW),
        (G4 + 0x1000, RET_ALLOW),
        (2 * G4, RET_ALLOW),
        (2 * G4 + 1, RET_ALLOW),
    ] {
        for nr in [202, 24, 228] {
            let d = data(AUDIT_ARCH_X86_64, nr, ip, [0; 6]);
            assert_eq!(evaluate(&prog, &d), Some(want), "nr {nr} ip {ip:#x}");
        }
    }
    let mmap = |addr: u64, len: u64| data(AUDIT_ARCH_X86_64, 9, HI, [addr, len, 0, 0x32, anon, 0]);
    let mprotect = |addr: u64, len: u64| data(AUDIT_ARCH_X86_64, 10, HI, [addr, len, 0, 0, 0, 0]);
    for (addr, len, want, what) in [
        (0xffff_f000, 0x1000, RET_ALLOW, "ends exactly at 4G"),
        (0x1000, G4 - 0x1000, RET_ALLOW, "the whole mirror region"),
        (
            0xffff_e000,
            0xfff,
            RET_ALLOW,
            "ends below 4G, unaligned length",
        ),
        (0xffff_f000, 0x1001, RET_KILL_PROCESS, "one byte past 4G"),
        (0xffff_f000, 0x2000, RET_KILL_PROCESS, "one page past 4G"),
        (
            0x2000,
            G4 - 0x1000,
            RET_KILL_PROCESS,
            "one page past 4G, from low",
        ),
        (
            0xffff_f000,
            0xffff_f000,
            RET_KILL_PROCESS,
            "huge length wrapping",
        ),
        (
            0xffff_ffff,
            0xffff_ffff,
            RET_KILL_PROCESS,
            "largest 32-bit sum",
        ),
        (
            0x1000,
            0xffff_ffff,
            RET_KILL_PROCESS,
            "wraps to just below the start",
        ),
        (0, 0, RET_ALLOW, "empty"),
        (0x1000, G4, RET_KILL_PROCESS, "length of 4G"),
        (G4, 0x1000, RET_KILL_PROCESS, "starts at 4G"),
    ] {
        assert_eq!(
            evaluate(&prog, &mmap(addr, len)),
            Some(want),
            "mmap: {what}"
        );
        assert_eq!(
            evaluate(&prog, &mprotect(addr, len)),
            Some(want),
            "mprotect: {what}"
        );
    }
}

#[test]
fn every_rule_is_reachable_and_documented() {
    let prog = build_filter(POLICY);
    for r in POLICY {
        assert!(!r.why.is_empty());
        let mut d = data(AUDIT_ARCH_X86_64, r.nr, HI, [0; 6]);
        // Satisfy the argument checks.
        for c in r.args {
            if let ArgCheck::LowIn(a, v) = c {
                d.args[usize::from(*a)] = u64::from(v[0]);
            }
        }
        assert_eq!(evaluate(&prog, &d), Some(RET_ALLOW), "{}", r.name);
    }
}
