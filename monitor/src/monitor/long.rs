//! What only 64-bit code has: its SYSCALL, the host's vsyscall page, and leaving 64-bit mode.

use super::signal::Outcome;
use super::{GuestRam, Host, Monitor, HOST_CS32};
use crate::frame::{SignalContext, AUDIT_ARCH_X86_64};
use plex86_protocol::{seg, EscapeKind, ExitReason, SyscallInstruction};

/// The host's (and an x86-64 guest's) vsyscall page: its entry points are at 0x000, 0x400 and
/// 0x800 in it.
const VSYSCALL_PAGE: u64 = 0xffff_ffff_ff60_0000;
/// A #PF error code's U and I/D bits: a user instruction fetch (what `page_fault` reads).
const PF_USER_FETCH: u64 = 0x14;

fn in_vsyscall_page(addr: u64) -> bool {
    addr & !0xfff == VSYSCALL_PAGE
}

impl<R: GuestRam, H: Host> Monitor<R, H> {
    /// [`Self::escape_check`] for 64-bit code: its own SYSCALL is an exit, not an escape (the
    /// guest thread's filter traps every call from outside S's code page); a signal with any
    /// code selector but the host's 64-bit one means the guest left 64-bit mode (a far
    /// transfer to a host selector), which no exit can describe.
    pub(super) fn escape_check_64(&mut self, ctx: &mut SignalContext<'_>) -> Option<Outcome> {
        let mc = &ctx.uc.mc;
        if ctx.sig == libc::SIGSYS && ctx.arch == AUDIT_ARCH_X86_64 {
            return Some(self.sigsys_x86_64(ctx));
        }
        if in_vsyscall_page(mc.rip) {
            // The host refused the fetch there (vsyscall=none, or a misaligned entry its
            // emulation refuses): the guest's own fetch, which its tables judge.
            return Some(self.page_fault(mc.rip, PF_USER_FETCH));
        }
        // Intel's SYSENTER from 64-bit code: trapped by seccomp at the landing pad, or, when
        // the kernel could not read [ESP], faulting at its low 32 bits in compatibility mode.
        if mc.cs == HOST_CS32 && (ctx.sig == libc::SIGSYS || self.in_vdso_low(mc.rip)) {
            return Some(self.compat_fast_syscall(ctx));
        }
        if mc.cs != self.installed[seg::CS] {
            let diagnostic = ((ctx.sig as u32) << 16) | u32::from(mc.cs);
            self.escape(ctx, EscapeKind::LongMode, mc.rip, diagnostic);
            return Some(Outcome::Exit);
        }
        None
    }

    /// A 64-bit system call of 64-bit code, trapped by seccomp before the host ran it: the
    /// kernel's rollback left the full original RAX in the frame and every other register as
    /// the instruction left it (RCX and R11 already overwritten by the CPU, as Bochs's
    /// re-executed SYSCALL overwrites them: the exit is exact). RIP is rewound over the
    /// instruction, whose bytes 0F 05 are checked: a call the host reports elsewhere is not
    /// the guest's SYSCALL: the host's vsyscall emulation reports a vsyscall entry point
    /// ([`Self::vsyscall`]); anything else ends the run as an escape.
    fn sigsys_x86_64(&mut self, ctx: &mut SignalContext<'_>) -> Outcome {
        let after = ctx.call_addr;
        if in_vsyscall_page(after) && ctx.uc.mc.rip != after {
            return self.vsyscall(ctx);
        }
        if ctx.uc.mc.rip != after || self.code_bytes_before(after, 2) != Some([0x0f, 0x05]) {
            self.escape(ctx, EscapeKind::HostSyscall, after, 0);
            return Outcome::Exit;
        }
        self.set_exit(ExitReason::SystemCall {
            instruction: SyscallInstruction::Syscall,
        });
        self.exit.ecx_clobbered = true;
        Outcome::capture_at(after.wrapping_sub(2))
    }

    /// A call to a vsyscall entry point: the host's vsyscall emulation asked seccomp, whose
    /// trap came after the kernel had emulated the `ret` (RIP = the caller, RSP + 8) and set
    /// RAX to the call's number. Rewound to the fetch at the entry point (RIP = the entry,
    /// RSP − 8: the return address the guest's CALL pushed is on its stack), it is the guest's
    /// instruction fetch there, which its own tables judge: a guest #PF its kernel emulates
    /// the vsyscall for, or an access Bochs performs. RAX before the call is lost; it is the
    /// vsyscall's result anyway (design-long-mode.md §3.5).
    fn vsyscall(&mut self, ctx: &mut SignalContext<'_>) -> Outcome {
        let entry = ctx.call_addr;
        let mc = &mut ctx.uc.mc;
        mc.rip = entry;
        mc.rsp = mc.rsp.wrapping_sub(8);
        self.page_fault(entry, PF_USER_FETCH)
    }
}
