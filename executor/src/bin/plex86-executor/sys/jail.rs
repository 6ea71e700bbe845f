//! Setup-time process controls: the jail's steps (file descriptors, prctl, CPUID faulting,
//! the seccomp filter) and the host checks that need an instruction or the auxiliary vector.

use super::{errno, syscall6};
/// True if `sel` names a descriptor that CPL 3 code could load (LAR succeeds).
pub fn selector_loadable(sel: u16) -> bool {
    let ok: u8;
    // SAFETY: LAR only reads the descriptor tables and sets ZF; no memory is written.
    unsafe {
        std::arch::asm!(
            "lar {tmp:e}, {sel:e}",
            "setz {ok}",
            sel = in(reg) u32::from(sel),
            tmp = out(reg) _,
            ok = out(reg_byte) ok,
            options(nomem, nostack),
        );
    }
    ok != 0
}

// Setup-time process controls.

/// prctl with integer arguments.
pub fn prctl(op: i32, a: u64) -> Result<i32, i32> {
    // SAFETY: the prctl operations used by the executor take integer arguments only.
    let r = unsafe { libc::prctl(op, a, 0u64, 0u64, 0u64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `arch_prctl(ARCH_SET_CPUID, 0)`: CPUID raises #GP in this thread (CPUID faulting).
/// `Err(ENODEV)` when the CPU or hypervisor has no CPUID faulting.
pub fn set_cpuid_faulting() -> Result<(), i32> {
    const ARCH_SET_CPUID: u64 = 0x1012;
    // SAFETY: ARCH_SET_CPUID takes an integer argument and only changes this thread's CPUID
    // behaviour; the kernel resets it at execve, which the executor never calls.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 0u64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// getppid.
pub fn getppid() -> u32 {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::getppid() as u32 }
}

/// Closes every file descriptor except 3 and 4.
pub fn close_other_fds() -> Result<(), i32> {
    for (a, b) in [(0usize, 2usize), (5, u32::MAX as usize)] {
        // SAFETY: closing descriptors this process does not use afterwards (Rust's std holds no
        // descriptors open in the executor).
        let r = unsafe { syscall6(libc::SYS_close_range, [a, b, 0, 0, 0, 0]) };
        if r < 0 {
            return Err(-r as i32);
        }
    }
    Ok(())
}

/// The address of the vDSO (the AT_SYSINFO_EHDR auxiliary vector entry; 0 without one).
pub fn vdso_base() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) }
}

/// The AT_HWCAP2 auxiliary vector entry.
pub fn hwcap2() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP2) }
}

/// The caller's thread id.
pub(super) fn gettid() -> i32 {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::gettid() }
}

/// Installs the seccomp filter (needs PR_SET_NO_NEW_PRIVS).
pub fn install_seccomp(prog: &[plex86_executor::seccomp::SockFilter]) -> Result<(), i32> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const plex86_executor::seccomp::SockFilter,
    }
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads the program from valid memory.
    let r = unsafe {
        syscall6(
            libc::SYS_seccomp,
            [1, 0, &fprog as *const _ as usize, 0, 0, 0],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}
