//! The seccomp policy as data: the allowlist, with a justification per rule, and the
//! constants the filter decides by.

pub use plex86_monitor::frame::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// Rule 3 traps every system call whose reported instruction pointer is below 4 GiB + this.
/// seccomp sees the address after the instruction, and an x86 instruction is at most 15 bytes
/// long: a `syscall` starting at the last guest byte (0xffffffff) reports at most
/// 4 GiB + 14 (2-byte `0f 05` at 0xfffffffe reports exactly 4 GiB). Executor code never lives
/// in the first page above 4 GiB (its mappings are placed by the kernel, far higher).
pub const SYSCALL_IP_SLACK: u32 = 15;

/// An argument condition of a rule (on the 64-bit system call argument `arg`).
#[derive(Clone, Copy, Debug)]
pub enum ArgCheck {
    /// The upper 32 bits of the argument are zero (an address or length below 4 GiB).
    Below4G(u8),
    /// The lower 32 bits equal one of the values.
    LowIn(u8, &'static [u32]),
    /// The range of the address argument `.0` and the length argument `.1` lies below 4 GiB:
    /// both are below 4 GiB and their sum is at most 4 GiB.
    RangeBelow4G(u8, u8),
    /// The range of the address argument `.0` and the length argument `.1` does not reach
    /// into the stub's reserved 4 GiB block (`plex86_protocol::stub::reserved_block`; the
    /// filter is built for one S), and both lie in user space.
    RangeClearOfStub(u8, u8),
}

/// One allowlisted system call.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// x86-64 system call number.
    pub nr: u32,
    /// Name, for messages.
    pub name: &'static str,
    /// Why the executor needs it.
    pub why: &'static str,
    /// Conditions on the arguments (all must hold).
    pub args: &'static [ArgCheck],
}

/// `MAP_ANONYMOUS` mappings pass -1 as fd.
const FD_NONE: u32 = u32::MAX;

/// The allowlist. Nothing here opens files or sockets or creates processes.
pub const POLICY: &[Rule] = &[
    Rule {
        nr: libc::SYS_futex as u32,
        name: "futex",
        why: "wait for requests / wake the library on the control-region sequence words",
        args: &[],
    },
    Rule {
        nr: libc::SYS_rt_sigreturn as u32,
        name: "rt_sigreturn",
        why: "return from the signal handler to the guest, and enter the guest",
        args: &[],
    },
    Rule {
        nr: libc::SYS_mmap as u32,
        name: "mmap",
        why:
            "demand-map guest pages (RAM fd) and unmap them (anonymous PROT_NONE), below 4 GiB only",
        args: &[
            ArgCheck::RangeBelow4G(0, 1),
            ArgCheck::LowIn(4, &[plex86_protocol::RAM_FD as u32, FD_NONE]),
        ],
    },
    Rule {
        nr: libc::SYS_mprotect as u32,
        name: "mprotect",
        why: "write-protect mirrored code pages, below 4 GiB only",
        args: &[ArgCheck::RangeBelow4G(0, 1)],
    },
    Rule {
        nr: libc::SYS_modify_ldt as u32,
        name: "modify_ldt",
        why: "install the guest's segment descriptors as LDT entries (write mode 0x11 only)",
        args: &[ArgCheck::LowIn(0, &[0x11])],
    },
    Rule {
        nr: libc::SYS_timer_settime as u32,
        name: "timer_settime",
        why: "arm and disarm the budget timer",
        args: &[],
    },
    Rule {
        nr: libc::SYS_timer_gettime as u32,
        name: "timer_gettime",
        why: "tell the budget timer's own expiry from a stale signal of an earlier run",
        args: &[],
    },
    Rule {
        nr: libc::SYS_clock_gettime as u32,
        name: "clock_gettime",
        why: "measure native time (the vDSO cannot be used: RDTSC is disabled)",
        args: &[],
    },
    Rule {
        nr: libc::SYS_sched_yield as u32,
        name: "sched_yield",
        why: "let the library run while polling for a request on a shared CPU",
        args: &[],
    },
    Rule {
        nr: libc::SYS_exit as u32,
        name: "exit",
        why: "leave",
        args: &[],
    },
    Rule {
        nr: libc::SYS_exit_group as u32,
        name: "exit_group",
        why: "leave (shutdown, panic, guest escape)",
        args: &[],
    },
];
