//! The stub executor's region S (issue 14's gate, docs/plans/issue14-gate.md): where the stub
//! process keeps its code, the pages the library writes and the pages the stub writes, and the
//! words in them. The launcher (`plex86-executor --stub`), the stub's assembly and the
//! library's stub driver all take their offsets from here.
//!
//! S, as the stub process maps it (nothing else is mapped there but guest mirrors and
//! `[vsyscall]`):
//!
//! | offset in S | size | prot | backing | writer |
//! |---|---|---|---|---|
//! | [`CODE`] | 4 KiB | R-X | anonymous copy of the stub's position-independent code | nobody |
//! | [`LIB`] | [`LIB_LEN`] | R-- | control memfd at 0 | the library |
//! | [`STUB`] | [`STUB_LEN`] | RW- | control memfd at [`LIB_LEN`] | the stub |
//!
//! The guest thread waits for a verdict on [`by_lib::REQ_SEQ`], publishes each signal through
//! the [`by_stub`] words and its kernel frame on the alternate stack; the mapper thread carries
//! out [`MapOp`]s from the library's pages.

/// Where S is unless configured otherwise: in the hole of the default x86-64 Linux layout
/// (above sanitizer shadows, below PIE and library bases).
pub const DEFAULT_BASE: u64 = 0x3f00_0000_0000;
/// Offset of the code page in S.
pub const CODE: u64 = 0;
/// Size of the code page.
pub const CODE_LEN: usize = 4096;
/// Offset of the library-written pages in S (control memfd offset 0).
pub const LIB: u64 = 0x1000;
/// Size of the library-written pages.
pub const LIB_LEN: usize = 0x4000;
/// Offset of the stub-written pages in S (control memfd offset [`LIB_LEN`]).
pub const STUB: u64 = LIB + LIB_LEN as u64;
/// Size of the stub-written pages.
pub const STUB_LEN: usize = 0x12000;
/// Size of the control memfd.
pub const CONTROL_LEN: usize = LIB_LEN + STUB_LEN;
/// Size of S.
pub const S_LEN: u64 = STUB + STUB_LEN as u64;

/// The end of the user address space of a 4-level x86-64 process.
pub const USER_END: u64 = 0x7fff_ffff_f000;

/// The 4 GiB-aligned block that holds S at `base`: no guest page is mirrored in it, and the
/// mapper's filter refuses any range that reaches into it (it judges ranges by 32-bit halves,
/// which makes a whole block the natural unit). A guest page in it is emulated.
pub const fn reserved_block(base: u64) -> std::ops::Range<u64> {
    let start = base & !0xffff_ffff;
    start..start + (1 << 32)
}

/// Why `base` cannot hold S, if it cannot: S must be 2 MiB-aligned, lie in one 4 GiB block
/// above the first 4 GiB (the 32-bit guests' mirrors) and below the end of user space.
pub fn check_base(base: u64) -> Result<(), String> {
    if base % (2 << 20) != 0 {
        return Err(format!("{base:#x} is not 2 MiB-aligned"));
    }
    if base < 1 << 32 {
        return Err(format!(
            "{base:#x} is below 4 GiB, where 32-bit guests' pages are mirrored"
        ));
    }
    if base >= USER_END & !0xffff_ffff {
        return Err(format!(
            "{base:#x} is too high: its 4 GiB block must end below {USER_END:#x}"
        ));
    }
    // 2 MiB-aligned and no longer than 2 MiB (asserted below): S never crosses the block.
    Ok(())
}

/// Words of the library-written pages (offsets from [`LIB`]).
pub mod by_lib {
    /// u32: bumped by the library to give the guest thread a verdict.
    pub const REQ_SEQ: usize = 0x00;
    /// u32: the verdict ([`super::Verdict`]).
    pub const VERDICT: usize = 0x04;
    /// u32: the guest thread goes on only when the mapper's done sequence has reached this.
    pub const RESUME_AFTER: usize = 0x08;
    /// u32: non-zero while the library sleeps on the stub's exit sequence (wake it).
    pub const LIB_SLEEPING: usize = 0x0c;
    /// u32: bumped by the library when a batch of [`super::MapOp`]s is ready.
    pub const MAP_SEQ: usize = 0x10;
    /// u32: ops in the batch.
    pub const MAP_COUNT: usize = 0x14;
    /// u32: polls before the guest thread and the mapper sleep on a futex.
    pub const SPIN: usize = 0x18;
    /// u32: EFLAGS.ID to enter with (0 or 1 << 21).
    pub const ENTRY_ID: usize = 0x1c;
    /// The entry's data segments (`EntrySegs`: selectors DS, ES, FS, GS; FS base; GS base).
    pub const SEGS: usize = 0x20;
    /// `struct itimerspec`: the run's budget, which the guest thread arms its timer with
    /// (relative, one-shot) just before it enters.
    pub const BUDGET: usize = 0x40;
    /// The op batch.
    pub const OPS: usize = 0x100;
    /// The entry `rt_sigframe` (64-byte aligned).
    pub const FRAME: usize = 0x2000;
}

/// Words of the stub-written pages (offsets from [`STUB`]).
pub mod by_stub {
    /// u32: bumped by the guest thread's handler at each signal.
    pub const EXIT_SEQ: usize = 0x00;
    /// u32: the last request sequence the guest thread took.
    pub const ACK: usize = 0x04;
    /// u32: non-zero while the guest thread sleeps on [`super::by_lib::REQ_SEQ`].
    pub const SLEEPING: usize = 0x08;
    /// u32: the last op batch the mapper has carried out.
    pub const MAP_DONE: usize = 0x0c;
    /// u32: the first failure (negative errno) of the last batch, 0 if none.
    pub const MAP_ERR: usize = 0x10;
    /// u32: non-zero while the mapper sleeps on [`super::by_lib::MAP_SEQ`].
    pub const MAPPER_SLEEPING: usize = 0x14;
    /// u32: 1 once the stub is ready; [`super::SETUP_FAILED`] | step on a failed setup step.
    pub const READY: usize = 0x18;
    /// u32: the signal number.
    pub const SIG: usize = 0x1c;
    /// u64: the siginfo's address (in S).
    pub const INFO: usize = 0x20;
    /// u64: the ucontext's address (in S).
    pub const UC: usize = 0x28;
    /// 4 × u16: DS, ES, FS, GS at the signal.
    pub const SEGS: usize = 0x30;
    /// u64: FS base at the signal.
    pub const FS_BASE: usize = 0x38;
    /// u64: GS base at the signal.
    pub const GS_BASE: usize = 0x40;
    /// u64: every signal (the mapper's mask).
    pub const ALL_SIGNALS: usize = 0x48;
    /// 2 × (address, length): what the guest thread unmaps at start (everything but S).
    pub const UNMAP: usize = 0x50;
    /// The kernel's XSAVE signal-frame parameters the launcher measured: u32 extended size,
    /// u32 xstate size, u64 xfeatures.
    pub const XSAVE_SW: usize = 0x70;
    /// `struct sock_fprog` of the guest thread's filter.
    pub const FPROG_GUEST: usize = 0x80;
    /// `struct sock_fprog` of the mapper's filter.
    pub const FPROG_MAPPER: usize = 0x90;
    /// u32: the mapper thread's TID (for the library's CPU placement).
    pub const MAPPER_TID: usize = 0xa0;
    /// u64: 1 when the launcher turned CPUID faulting on for the guest thread (native CPUID
    /// then exits), else 0.
    pub const CPUID_FAULTING: usize = 0xa8;
    /// u64: where this host reports RIP for ICEBP's #DB, measured by the launcher: 0 after
    /// the F1, 1 at it.
    pub const ICEBP_AT: usize = 0xb0;
    /// u64: the launcher's measure of a page fault delivered to a handler and returned from
    /// (ns): the part of a fill the stub's own timestamps cannot see.
    pub const FAULT_NS: usize = 0xb8;
    /// `struct timespec` (CLOCK_MONOTONIC): taken by the guest thread just before it enters
    /// the guest from the library's frame.
    pub const ENTER_TS: usize = 0xc0;
    /// `struct timespec`: taken by the handler at each signal, before it is published.
    pub const SIGNAL_TS: usize = 0xd0;
    /// `struct timespec`: taken by the handler when it returns to the guest after a Resume
    /// (the mapper's batch done).
    pub const RESUME_TS: usize = 0xe0;
    /// u32: the id of the guest thread's budget timer (`timer_create` by the launcher:
    /// CLOCK_MONOTONIC, SIGALRM to the guest thread).
    pub const TIMER_ID: usize = 0xf0;
    /// u64: where the launcher's vDSO was (AT_SYSINFO_EHDR; 0 without one). The stub unmaps
    /// it, but the kernel's compat fast-syscall return (SYSENTER on Intel) still lands at its
    /// landing pad's offset from there, which the monitor must recognise.
    pub const VDSO_BASE: usize = 0xf8;
    /// The guest thread's BPF program.
    pub const PROG_GUEST: usize = 0x100;
    /// The mapper's BPF program.
    pub const PROG_MAPPER: usize = 0x800;
    /// Room for either program, in bytes.
    pub const PROG_ROOM: usize = 0x700;
    /// Top of the stack the guest thread waits on before its first entry.
    pub const IDLE_STACK_TOP: usize = 0x1800;
    /// Top of the mapper's (unused) stack.
    pub const MAPPER_STACK_TOP: usize = 0x2000;
    /// The guest thread's alternate signal stack.
    pub const ALTSTACK: usize = 0x2000;
    /// Its size.
    pub const ALTSTACK_LEN: usize = 0x10000;
}

/// `by_stub::READY` value of a failed setup step (the step number is or'ed in).
pub const SETUP_FAILED: u32 = 0x8000_0000;

/// What the library tells the waiting guest thread.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enter the guest from the frame at [`by_lib::FRAME`].
    Enter = 1,
    /// Return from the signal handler (the kernel's frame, as the library left it).
    Resume = 2,
}

/// One mapper operation (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOp {
    /// [`OP_MMAP`], [`OP_MUNMAP`], [`OP_MPROTECT`] or [`OP_LDT`].
    pub kind: u32,
    /// Padding.
    pub pad: u32,
    /// Address (for [`OP_LDT`]: the first 8 bytes of the `user_desc`).
    pub addr: u64,
    /// Length (for [`OP_LDT`]: its last 8 bytes).
    pub len: u64,
    /// PROT_* bits.
    pub prot: u32,
    /// MAP_* flags.
    pub flags: u32,
    /// File descriptor (-1 for anonymous memory).
    pub fd: i32,
    /// Padding.
    pub pad2: u32,
    /// File offset.
    pub offset: u64,
}

/// `mmap(addr, len, prot, flags, fd, offset)`.
pub const OP_MMAP: u32 = 1;
/// `munmap(addr, len)`.
pub const OP_MUNMAP: u32 = 2;
/// `mprotect(addr, len, prot)`.
pub const OP_MPROTECT: u32 = 3;
/// `modify_ldt(0x11, &user_desc, 16)`, the descriptor in `addr`/`len`.
pub const OP_LDT: u32 = 4;
/// Ops per batch.
pub const MAX_OPS: usize = 128;

const _: () = {
    assert!(S_LEN <= 2 << 20);
    assert!(std::mem::size_of::<MapOp>() == 48);
    assert!(by_lib::OPS + MAX_OPS * 48 <= by_lib::FRAME);
    assert!(by_lib::FRAME % 64 == 0);
    assert!(by_stub::ALTSTACK + by_stub::ALTSTACK_LEN <= STUB_LEN);
    assert!(by_stub::RESUME_TS + 16 <= by_stub::TIMER_ID);
    assert!(by_stub::TIMER_ID + 4 <= by_stub::PROG_GUEST);
    assert!(by_lib::SEGS + 24 <= by_lib::BUDGET && by_lib::BUDGET + 32 <= by_lib::OPS);
    assert!(by_stub::PROG_GUEST + by_stub::PROG_ROOM <= by_stub::PROG_MAPPER);
    assert!(by_stub::PROG_MAPPER + by_stub::PROG_ROOM <= by_stub::IDLE_STACK_TOP - 0x100);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_bases() {
        assert_eq!(check_base(DEFAULT_BASE), Ok(()));
        assert_eq!(
            reserved_block(DEFAULT_BASE + 0x20_0000),
            0x3f00_0000_0000..0x3f01_0000_0000
        );
        assert_eq!(check_base(1 << 32), Ok(()));
        assert_eq!(check_base(0x7ffe_0000_0000), Ok(()));
        for bad in [
            0,
            0x1000,
            0x8000_0000,
            DEFAULT_BASE + 0x1000,
            0x7fff_0000_0000,
            0x8000_0000_0000,
            !0x1f_ffff,
        ] {
            assert!(check_base(bad).is_err(), "{bad:#x}");
        }
    }
}
