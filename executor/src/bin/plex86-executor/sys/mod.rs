//! Executor-side system glue: raw system calls, the guest entry (`rt_sigreturn` into
//! compatibility mode), the signal-handler trampoline, the LDT, and the mapping of guest RAM.
//! Every `unsafe` block of the executor lives in this directory (`ci/unsafe-modules`).
//!
//! Raw system calls use inline `syscall` rather than libc: after setup the executor must not
//! touch `errno` (thread-local storage) from the signal handler, nor the vDSO (RDTSC is
//! disabled with PR_SET_TSC).
//!
//! * this file: the raw system call and the run-time calls made through it (exit, clock,
//!   futex, budget timer, LDT);
//! * [`mirror`]: the guest mirror region below 4 GiB and guest RAM above it;
//! * [`control`]: the control region as mapped here;
//! * [`trampoline`]: the guest entry and the signal-handler entry (assembly);
//! * [`signal`]: handler installation and the context handed to the monitor;
//! * [`probe`]: setup-time measurements of the host (signal-frame XSAVE layout, fault cost,
//!   ICEBP);
//! * [`jail`]: the setup-time process controls (fds, prctl, CPUID faulting, seccomp);
//! * [`selftest`]: the seccomp self-test's calls;
//! * [`cell`]: the cell the request loop and the signal handler share.

mod cell;
mod control;
mod jail;
mod mirror;
mod probe;
mod selftest;
mod signal;
mod trampoline;

pub use cell::MonitorCell;
pub use control::Control;
pub use jail::{
    close_other_fds, getppid, hwcap2, install_seccomp, prctl, selector_loadable,
    set_cpuid_faulting, vdso_base,
};
pub use mirror::{
    mirror_map, mirror_protect, mirror_unmap, reserve_mirror_region, RamMapping, MIRROR_END,
    MIRROR_START,
};
pub use plex86_monitor::frame::{SignalAction, SignalContext};
pub use probe::{fault_round_trip_ns, probe_icebp_rip, probe_sigframe_xsave};
pub use selftest::{selftest_call, selftest_prepare};
pub use signal::{block_all_signals, current_altstack, install_signal_handlers};
pub use trampoline::enter_guest_raw;

use jail::gettid;
use plex86_monitor::frame::UserDesc;
use std::sync::atomic::AtomicU32;

/// A raw system call with up to six arguments; returns the kernel's value (negative errno).
///
/// # Safety
/// The caller must make sure the call with these arguments does not violate memory safety
/// (e.g. does not unmap or overwrite memory that Rust code still uses).
#[inline(always)]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the call's effects are sound; the syscall instruction
    // clobbers only rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Leaves the process immediately with `code`.
pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group does not return and affects no memory.
        unsafe { syscall6(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

/// Reads a clock with the raw system call (not the vDSO, which uses RDTSC).
pub fn clock_ns(clock: i32) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid local.
    unsafe {
        syscall6(
            libc::SYS_clock_gettime,
            [clock as usize, &mut ts as *mut _ as usize, 0, 0, 0, 0],
        )
    };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// FUTEX_WAIT (shared) on `word` while it equals `val`.
pub fn futex_wait(word: &AtomicU32, val: u32) {
    // SAFETY: `word` is a valid aligned u32; no timeout; the kernel only reads it.
    unsafe {
        syscall6(
            libc::SYS_futex,
            [
                word.as_ptr() as usize,
                libc::FUTEX_WAIT as usize,
                val as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Yields the CPU.
pub fn sched_yield() {
    // SAFETY: no arguments, no memory effects.
    unsafe { syscall6(libc::SYS_sched_yield, [0; 6]) };
}

/// FUTEX_WAKE (shared) on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid aligned u32.
    unsafe {
        syscall6(
            libc::SYS_futex,
            [
                word.as_ptr() as usize,
                libc::FUTEX_WAKE as usize,
                i32::MAX as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Arms (or with 0 disarms) the budget timer for `ns` nanoseconds from now.
pub fn timer_arm(timer: i32, ns: u64) {
    let its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: timer_settime reads one itimerspec from a valid local; old value not requested.
    unsafe {
        syscall6(
            libc::SYS_timer_settime,
            [timer as usize, 0, &its as *const _ as usize, 0, 0, 0],
        )
    };
}

/// True while `timer` is armed (its expiry is still ahead).
pub fn timer_pending(timer: i32) -> bool {
    let mut its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: timer_gettime writes one itimerspec into a valid local.
    let r = unsafe {
        syscall6(
            libc::SYS_timer_gettime,
            [timer as usize, &mut its as *mut _ as usize, 0, 0, 0, 0],
        )
    };
    r == 0 && (its.it_value.tv_sec != 0 || its.it_value.tv_nsec != 0)
}

/// Creates the budget timer on `clock`, delivering `signal` to this thread.
pub fn timer_create(clock: i32, signal: i32) -> Result<i32, i32> {
    // SAFETY: sigevent is plain data; timer_create writes the id into a valid local.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = signal;
        sev.sigev_notify_thread_id = gettid();
        let mut id: i32 = 0;
        let r = syscall6(
            libc::SYS_timer_create,
            [
                clock as usize,
                &mut sev as *mut _ as usize,
                &mut id as *mut i32 as usize,
                0,
                0,
                0,
            ],
        );
        if r < 0 {
            Err(-r as i32)
        } else {
            Ok(id)
        }
    }
}

/// Writes one LDT entry (modify_ldt mode 0x11).
pub fn write_ldt(d: &UserDesc) -> Result<(), i32> {
    // SAFETY: modify_ldt reads one user_desc from a valid reference; changing the LDT affects
    // no memory of this process.
    let r = unsafe {
        syscall6(
            libc::SYS_modify_ldt,
            [
                0x11,
                d as *const UserDesc as usize,
                std::mem::size_of::<UserDesc>(),
                0,
                0,
                0,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
