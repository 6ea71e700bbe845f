//! The stub executor's two filters (issue 14's gate; design: design-long-mode.md §3.3), as
//! data like the executor's [`super::POLICY`]. Both decide first by the instruction pointer:
//! only S's code page may make the allowed calls.
//!
//! * Guest thread: a call from outside S's code page is guest code's (64-bit SYSCALL,
//!   INT 0x80, compat SYSCALL/SYSENTER, vsyscall emulation): `RET_TRAP`, a guest exit. From
//!   the code page: [`GUEST_THREAD`] (futex wait/wake, rt_sigreturn, sched_yield,
//!   clock_gettime, timer_settime), anything else kills the process.
//! * Mapper thread: any call from outside the code page, or not in [`MAPPER`], kills.
//!   Guest code can jump into S's code with any registers; the mapper's arguments come only
//!   from pages the guest cannot write, and even so mappings stay clear of S's 4 GiB block
//!   (`plex86_protocol::stub::reserved_block`) and map only guest RAM or anonymous memory.

use super::bpf::OFF_NR;
use super::bpf::{jeq, jge, ld, push_rules, ret, SockFilter, OFF_ARCH, OFF_IP_HI, OFF_IP_LO};
use super::policy::{ArgCheck, Rule, AUDIT_ARCH_X86_64, RET_KILL_PROCESS, RET_TRAP};

const FUTEX_WAIT: u32 = 0;
const FUTEX_WAKE: u32 = 1;
const FD_NONE: u32 = u32::MAX;
/// MAP_SHARED | MAP_FIXED | MAP_POPULATE: a guest page from the RAM fd, its page-table entry
/// populated (the access that needed the fill follows at once).
const MAP_RAM: u32 = (libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE) as u32;

/// What S's code may call on the guest thread.
pub const GUEST_THREAD: &[Rule] = &[
    Rule {
        nr: libc::SYS_futex as u32,
        name: "futex",
        why: "wait for a verdict / wake the library (shared words; no PI, no requeue)",
        args: &[ArgCheck::LowIn(1, &[FUTEX_WAIT, FUTEX_WAKE])],
    },
    Rule {
        nr: libc::SYS_rt_sigreturn as u32,
        name: "rt_sigreturn",
        why: "enter the guest from the library's frame, return from the handler",
        args: &[],
    },
    Rule {
        nr: libc::SYS_sched_yield as u32,
        name: "sched_yield",
        why: "poll politely on a shared CPU",
        args: &[],
    },
    Rule {
        nr: libc::SYS_clock_gettime as u32,
        name: "clock_gettime",
        why: "time the run (no vDSO in the stub)",
        args: &[],
    },
    Rule {
        nr: libc::SYS_timer_settime as u32,
        name: "timer_settime",
        why: "arm the budget's timer at entry (the process's only timer; guest code that \
              re-arms it moves only its own run's end, which the library's signal bounds)",
        args: &[],
    },
];

/// What S's code may call on the mapper thread.
pub const MAPPER: &[Rule] = &[
    Rule {
        nr: libc::SYS_mmap as u32,
        name: "mmap",
        why: "map a guest page from the RAM fd, never in S's block",
        args: &[
            ArgCheck::RangeClearOfStub(0, 1),
            ArgCheck::LowIn(3, &[MAP_RAM]),
            ArgCheck::LowIn(4, &[plex86_protocol::RAM_FD as u32, FD_NONE]),
        ],
    },
    Rule {
        nr: libc::SYS_munmap as u32,
        name: "munmap",
        why: "drop guest mirrors, never in S's block",
        args: &[ArgCheck::RangeClearOfStub(0, 1)],
    },
    Rule {
        nr: libc::SYS_mprotect as u32,
        name: "mprotect",
        why: "write-protect mirrored code pages, never in S's block",
        args: &[ArgCheck::RangeClearOfStub(0, 1)],
    },
    Rule {
        nr: libc::SYS_modify_ldt as u32,
        name: "modify_ldt",
        why: "install the guest's segment descriptors (write mode 0x11 only)",
        args: &[ArgCheck::LowIn(0, &[0x11])],
    },
    Rule {
        nr: libc::SYS_futex as u32,
        name: "futex",
        why: "wait for a batch / wake the library",
        args: &[ArgCheck::LowIn(1, &[FUTEX_WAIT, FUTEX_WAKE])],
    },
    Rule {
        nr: libc::SYS_exit as u32,
        name: "exit",
        why: "end the mapper on a malformed batch",
        args: &[],
    },
];

/// The IP test: falls through when the reported IP (the address after the `syscall`) lies in
/// (code, code + 4 KiB], else returns `outside`.
fn from_code_page(p: &mut Vec<SockFilter>, code: u64, outside: u32) {
    let (hi, lo) = ((code >> 32) as u32, code as u32);
    assert!(
        code % 4096 == 0 && lo <= u32::MAX - 8192,
        "S's code page within a 4 GiB block"
    );
    p.extend([
        ld(OFF_IP_HI),
        jeq(hi, 1, 0),
        ret(outside),
        ld(OFF_IP_LO),
        jge(lo + 1, 1, 0),
        ret(outside),
        jge(lo + 4097, 0, 1),
        ret(outside),
    ]);
}

/// Kills unless arch is X86_64 and the number is not x32's.
fn native_64(p: &mut Vec<SockFilter>) {
    p.extend([
        ld(OFF_ARCH),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL_PROCESS),
        ld(OFF_NR),
        jge(0x4000_0000, 0, 1),
        ret(RET_KILL_PROCESS),
    ]);
}

/// The guest thread's filter for S's code page at `code`.
pub fn guest_thread_filter(code: u64) -> Vec<SockFilter> {
    let mut p = Vec::new();
    from_code_page(&mut p, code, RET_TRAP);
    native_64(&mut p);
    push_rules(&mut p, GUEST_THREAD, None);
    p
}

/// The mapper thread's filter for S's code page at `code`.
pub fn mapper_filter(code: u64) -> Vec<SockFilter> {
    let mut p = Vec::new();
    from_code_page(&mut p, code, RET_KILL_PROCESS);
    native_64(&mut p);
    let block = plex86_protocol::stub::reserved_block(code);
    push_rules(&mut p, MAPPER, Some((block.start >> 32) as u32));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::policy::{AUDIT_ARCH_I386, RET_ALLOW};
    use crate::seccomp::{evaluate, SeccompData};

    const S: u64 = plex86_protocol::stub::DEFAULT_BASE;
    const IN_S: u64 = S + 0x123;

    fn call(arch: u32, nr: i64, ip: u64, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr: nr as u32,
            arch,
            ip,
            args,
        }
    }

    #[test]
    fn every_call_from_outside_the_code_page_is_a_guest_exit() {
        let p = guest_thread_filter(S);
        for ip in [
            0x1000,
            0x0804_8002,
            0xffff_ffff_ff60_0009,
            S,
            S + 4097,
            S + 0x2000,
            S - 1,
        ] {
            for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0] {
                for nr in [0, 9, 59, 202, 231, 0x4000_0000 + 1] {
                    assert_eq!(
                        evaluate(&p, &call(arch, nr, ip, [0; 6])),
                        Some(RET_TRAP),
                        "ip {ip:#x} arch {arch:#x} nr {nr}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_code_page_may_make_only_its_four_calls() {
        let p = guest_thread_filter(S);
        let ok = |nr: i64, a1: u64| {
            evaluate(&p, &call(AUDIT_ARCH_X86_64, nr, IN_S, [0, a1, 0, 0, 0, 0]))
        };
        assert_eq!(ok(libc::SYS_futex, 0), Some(RET_ALLOW));
        assert_eq!(ok(libc::SYS_futex, 1), Some(RET_ALLOW));
        assert_eq!(
            ok(libc::SYS_futex, 6),
            Some(RET_KILL_PROCESS),
            "FUTEX_LOCK_PI"
        );
        assert_eq!(
            ok(libc::SYS_futex, 128),
            Some(RET_KILL_PROCESS),
            "private futex"
        );
        for nr in [
            libc::SYS_rt_sigreturn,
            libc::SYS_sched_yield,
            libc::SYS_clock_gettime,
        ] {
            assert_eq!(ok(nr, 0), Some(RET_ALLOW), "{nr}");
        }
        for nr in [
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mprotect,
            libc::SYS_openat,
            libc::SYS_clone,
            libc::SYS_execve,
            libc::SYS_kill,
            libc::SYS_exit_group,
            libc::SYS_rt_sigaction,
            libc::SYS_seccomp,
            libc::SYS_arch_prctl,
        ] {
            assert_eq!(ok(nr, 0), Some(RET_KILL_PROCESS), "{nr}");
        }
        for edge in [S + 1, S + 4096] {
            let d = call(AUDIT_ARCH_X86_64, libc::SYS_sched_yield, edge, [0; 6]);
            assert_eq!(evaluate(&p, &d), Some(RET_ALLOW), "{edge:#x}");
        }
        let compat = call(AUDIT_ARCH_I386, 20, IN_S, [0; 6]);
        assert_eq!(
            evaluate(&p, &compat),
            Some(RET_KILL_PROCESS),
            "INT 0x80 from S"
        );
        let x32 = call(AUDIT_ARCH_X86_64, 0x4000_0000 + 24, IN_S, [0; 6]);
        assert_eq!(evaluate(&p, &x32), Some(RET_KILL_PROCESS), "x32 from S");
    }

    /// Ranges at and around the edges of S's block, and across it: the filter allows exactly
    /// those clear of it (in user space), but for the one documented refusal.
    #[test]
    fn mapper_ranges_are_allowed_exactly_when_clear_of_s_block() {
        let p = mapper_filter(S);
        let block = plex86_protocol::stub::reserved_block(S);
        let user = 1u64 << 47;
        let mut points = vec![0, 0x1000, 1 << 32, user - 0x1000, user, u64::MAX - 0xfff];
        for edge in [block.start, block.end, S] {
            for d in [0u64, 0x1000, 0x2000, 1 << 32, (1 << 32) + 0x1000] {
                points.extend([edge.wrapping_sub(d), edge.wrapping_add(d)]);
            }
        }
        let mut checked = 0;
        for &a in &points {
            for &b in &points {
                if b <= a {
                    continue;
                }
                let len = b - a;
                let clear = b <= block.start || a >= block.end;
                let in_user = b <= user;
                let documented_refusal = b == block.start && a as u32 == 0 && len as u32 == 0;
                let d = call(
                    AUDIT_ARCH_X86_64,
                    libc::SYS_munmap,
                    IN_S,
                    [a, len, 0, 0, 0, 0],
                );
                let got = evaluate(&p, &d);
                let ctx = format!("[{a:#x}, {b:#x})");
                if !clear {
                    assert_eq!(got, Some(RET_KILL_PROCESS), "{ctx} reaches S's block");
                } else if in_user && !documented_refusal {
                    assert_eq!(got, Some(RET_ALLOW), "{ctx} is clear of S's block");
                }
                // Clear of the block but beyond user space: the kernel refuses it anyway.
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked} ranges");
    }

    #[test]
    fn the_mapper_maps_only_guest_ram_or_nothing() {
        let p = mapper_filter(S);
        let ram = plex86_protocol::RAM_FD as u64;
        let mmap = |addr: u64, len: u64, flags: u64, fd: u64| {
            evaluate(
                &p,
                &call(
                    AUDIT_ARCH_X86_64,
                    libc::SYS_mmap,
                    IN_S,
                    [addr, len, 3, flags, fd, 0],
                ),
            )
        };
        let shared = MAP_RAM as u64;
        assert_eq!(mmap(0x40_0000, 4096, shared, ram), Some(RET_ALLOW));
        assert_eq!(mmap(0xffff_f000, 4096, shared, ram), Some(RET_ALLOW));
        assert_eq!(mmap(0x7f12_3456_7000, 4096, shared, ram), Some(RET_ALLOW));
        assert_eq!(mmap(S, 4096, shared, ram), Some(RET_KILL_PROCESS), "over S");
        assert_eq!(
            mmap(0x40_0000, 4096, shared, 4),
            Some(RET_KILL_PROCESS),
            "control fd"
        );
        assert_eq!(
            mmap(0x40_0000, 4096, libc::MAP_SHARED as u64, ram),
            Some(RET_KILL_PROCESS),
            "not fixed"
        );
        let m = |nr: i64, addr: u64, len: u64| {
            evaluate(
                &p,
                &call(AUDIT_ARCH_X86_64, nr, IN_S, [addr, len, 0, 0, 0, 0]),
            )
        };
        assert_eq!(
            m(libc::SYS_munmap, 0x1000, (1 << 32) - 0x1000),
            Some(RET_ALLOW),
            "flush all of a 32-bit guest"
        );
        let block = plex86_protocol::stub::reserved_block(S);
        assert_eq!(
            m(libc::SYS_munmap, 0x1000, block.start - 0x1000),
            Some(RET_ALLOW),
            "flush all of a 64-bit guest, below S's block"
        );
        assert_eq!(
            m(
                libc::SYS_munmap,
                block.end,
                plex86_protocol::stub::USER_END - block.end
            ),
            Some(RET_ALLOW),
            "and above it"
        );
        assert_eq!(m(libc::SYS_munmap, S, 4096), Some(RET_KILL_PROCESS));
        assert_eq!(m(libc::SYS_mprotect, S, 4096), Some(RET_KILL_PROCESS));
        assert_eq!(m(libc::SYS_mprotect, 0x8000, 4096), Some(RET_ALLOW));
        assert_eq!(m(libc::SYS_modify_ldt, 0x11, 0), Some(RET_ALLOW));
        assert_eq!(
            m(libc::SYS_modify_ldt, 1, 0),
            Some(RET_KILL_PROCESS),
            "old mode"
        );
        for nr in [
            libc::SYS_openat,
            libc::SYS_clone,
            libc::SYS_exit_group,
            libc::SYS_rt_sigreturn,
        ] {
            assert_eq!(m(nr, 0, 0), Some(RET_KILL_PROCESS), "{nr}");
        }
        let outside = call(
            AUDIT_ARCH_X86_64,
            libc::SYS_munmap,
            0x40_1000,
            [0x1000, 4096, 0, 0, 0, 0],
        );
        assert_eq!(
            evaluate(&p, &outside),
            Some(RET_KILL_PROCESS),
            "mapper call from guest code"
        );
    }
}
