//! The seccomp self-test's calls (`plex86-executor --seccomp-selftest NAME`).

use super::{syscall6, MIRROR_END};
/// `__X32_SYSCALL_BIT`: x32 system call numbers are the x86-64 ones with this bit set.
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;

/// Start of the self-test's code page pair, which straddles 4 GiB.
const SELFTEST_CODE: u64 = MIRROR_END - 0x1000;

/// Where the self-test's `syscall` cases put their instruction bytes (a `ret` follows): the
/// system call reports the address after the instruction, here 4 GiB, 4 GiB + 1, 4 GiB + 14
/// (the longest instruction starting in guest memory: 13 ignored CS prefixes, `0f 05`) and
/// 4 GiB + 15 (an instruction starting above 4 GiB, which the filter must let through).
fn selftest_syscall_code(what: &str) -> Option<(u64, &'static [u8])> {
    const PREFIXED: [u8; 15] = [
        0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x0f, 0x05,
    ];
    Some(match what {
        "syscall_ip_4g" => (MIRROR_END - 2, &[0x0f, 0x05]),
        "syscall_ip_4g_plus_1" => (MIRROR_END - 1, &[0x0f, 0x05]),
        "syscall_ip_4g_plus_14" => (MIRROR_END - 1, &PREFIXED),
        "syscall_ip_4g_plus_15" => (MIRROR_END + 13, &[0x0f, 0x05]),
        _ => return None,
    })
}

/// Set-up of a seccomp self-test case before the filter goes in: the `syscall` cases map two
/// pages around 4 GiB and write their instruction there. Returns false if that failed.
pub fn selftest_prepare(what: &str) -> bool {
    let Some((at, bytes)) = selftest_syscall_code(what) else {
        return true;
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the self-test process
    // runs no guest and uses nothing near 4 GiB.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            [
                SELFTEST_CODE as usize,
                0x2000,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r as u64 != SELFTEST_CODE {
        return false;
    }
    let end = at + bytes.len() as u64;
    // SAFETY: `[at, end]` lies inside the fresh 8 KiB mapping (every case ends below
    // SELFTEST_CODE + 0x2000), which nothing else uses.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
        *(end as *mut u8) = 0xc3;
    }
    true
}

/// Makes one forbidden (or, for "clock_gettime" and "mmap_end_4g", allowed) system call for
/// the seccomp self-test. The `syscall` cases make an allowed call (`sched_yield`) from an
/// instruction near 4 GiB, prepared by [`selftest_prepare`].
pub fn selftest_call(what: &str) {
    if let Some((at, _)) = selftest_syscall_code(what) {
        // SAFETY: the code at `at` (written by selftest_prepare) is one `syscall` and a `ret`;
        // sched_yield has no memory effects, and the call clobbers only rax, rcx and r11.
        unsafe {
            std::arch::asm!(
                "call {code}",
                code = in(reg) at,
                inlateout("rax") libc::SYS_sched_yield => _,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        return;
    }
    let hi = 0x7f00_0000_0000usize;
    let low_fixed = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize;
    let (n, a): (libc::c_long, [usize; 6]) = match what {
        "getpid" => (libc::SYS_getpid, [0; 6]),
        "openat" => (
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                c"/etc/passwd".as_ptr() as usize,
                0,
                0,
                0,
                0,
            ],
        ),
        "socket" => (
            libc::SYS_socket,
            [
                libc::AF_INET as usize,
                libc::SOCK_STREAM as usize,
                0,
                0,
                0,
                0,
            ],
        ),
        "fork" => (libc::SYS_fork, [0; 6]),
        "clone" => (libc::SYS_clone, [libc::SIGCHLD as usize, 0, 0, 0, 0, 0]),
        "execve" => (
            libc::SYS_execve,
            [c"/bin/true".as_ptr() as usize, 0, 0, 0, 0, 0],
        ),
        "write" => (libc::SYS_write, [2, c"x".as_ptr() as usize, 1, 0, 0, 0]),
        "kill" => (libc::SYS_kill, [1, 0, 0, 0, 0, 0]),
        "x32_futex" => (X32_SYSCALL_BIT | libc::SYS_futex, [0; 6]),
        "mmap_high" => (
            libc::SYS_mmap,
            [
                hi,
                4096,
                7,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        ),
        "mprotect_high" => (libc::SYS_mprotect, [hi, 4096, 7, 0, 0, 0]),
        // Start and length below 4 GiB each, the end above it.
        "mmap_past_4g" => (
            libc::SYS_mmap,
            [0xffff_f000, 0x2000, 0, low_fixed, usize::MAX, 0],
        ),
        "mmap_wrap" => (
            libc::SYS_mmap,
            [0xffff_f000, 0xffff_f000, 0, low_fixed, usize::MAX, 0],
        ),
        "mprotect_past_4g" => (libc::SYS_mprotect, [0xffff_f000, 0x2000, 1, 0, 0, 0]),
        // Allowed: ends exactly at 4 GiB.
        "mmap_end_4g" => (
            libc::SYS_mmap,
            [0xffff_f000, 0x1000, 0, low_fixed, usize::MAX, 0],
        ),
        "modify_ldt_read" => (libc::SYS_modify_ldt, [0, 0, 0, 0, 0, 0]),
        "mmap_control_fd" => (
            libc::SYS_mmap,
            [0x10000, 4096, 3, libc::MAP_SHARED as usize, 4, 0],
        ),
        "clock_gettime" => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            (
                libc::SYS_clock_gettime,
                [1, &mut ts as *mut _ as usize, 0, 0, 0, 0],
            )
        }
        _ => return,
    };
    // SAFETY: every call here is either killed by the filter before it runs or harmless
    // (clock_gettime into a local; the others fail on bad arguments if ever allowed).
    unsafe { syscall6(n, a) };
}
