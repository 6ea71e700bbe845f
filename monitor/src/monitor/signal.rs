//! The signal handler's logic: which signals are guest events, escapes, and the exit each
//! cause makes.

use super::{GuestRam, Host, Monitor, HOST_CS32, HOST_CS64};
use crate::decode::{classify_gp, trap_insn, GpKind, TrapInsn};
use crate::frame::{SignalAction, SignalContext};
use crate::frame::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use crate::vector;
use plex86_protocol::xsave::{header, sw, xfeature};
use plex86_protocol::{gpr, seg, EscapeKind, ExitReason, SyscallInstruction};

/// An upper bound of the vDSO's text: the compat landing pad lies within it.
const VDSO_SPAN: u32 = 64 << 10;
const EFL_RF: u64 = 1 << 16;
const EFL_TF: u64 = 1 << 8;
/// The low half of a 64-bit register: all 32-bit code has of it.
const LOW32: u64 = 0xffff_ffff;

/// What one signal does to the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Return to the interrupted code.
    Resume,
    /// End the run; the exit and its state are complete.
    Exit,
    /// End the run with the signal frame's state, RIP and RAX replaced where given (the host
    /// reported them differently from where the guest's instruction starts / what it held).
    /// Values of the entry's width: 32-bit code's are zero-extended.
    Capture {
        rip_fix: Option<u64>,
        rax_fix: Option<u64>,
    },
}

impl Outcome {
    pub(super) const CAPTURE: Outcome = Outcome::Capture {
        rip_fix: None,
        rax_fix: None,
    };
    pub(super) fn capture_at(rip: u64) -> Outcome {
        Outcome::Capture {
            rip_fix: Some(rip),
            rax_fix: None,
        }
    }
}

impl<R: GuestRam, H: Host> Monitor<R, H> {
    /// The signal handler's logic: ignores what is not a guest event, then checks for an
    /// escape (or the compat fast-syscall return, which also runs outside the guest's code)
    /// before it classifies the signal by its cause.
    pub fn on_signal(&mut self, ctx: &mut SignalContext<'_>) -> SignalAction {
        if !self.in_guest {
            return SignalAction::Resume;
        }
        // Only kernel-generated signals are guest events (and the budget timer's SI_TIMER):
        // a signal sent by another process (si_code <= 0) is ignored.
        let from_timer = ctx.sig == libc::SIGALRM && ctx.code == libc::SI_TIMER;
        if ctx.code <= 0 && !from_timer {
            return SignalAction::Resume;
        }
        let outcome = match self.escape_check(ctx) {
            Some(o) => o,
            None => match ctx.sig {
                libc::SIGTRAP if ctx.uc.mc.trapno == vector::DB => {
                    self.debug_exit(ctx.code, ctx.uc.mc.rip)
                }
                libc::SIGSYS if ctx.arch == AUDIT_ARCH_I386 => self.sigsys_i386(ctx),
                libc::SIGALRM if from_timer => self.timer_exit(),
                _ => self.fault_exit(ctx),
            },
        };
        self.finish(ctx, outcome)
    }

    /// Carries out an [`Outcome`]: for `Capture`, the exit state is the signal frame's, with
    /// the corrections the cause asked for.
    #[inline]
    fn finish(&mut self, ctx: &SignalContext<'_>, outcome: Outcome) -> SignalAction {
        match outcome {
            Outcome::Resume => SignalAction::Resume,
            Outcome::Exit => SignalAction::ExitToHost,
            Outcome::Capture { rip_fix, rax_fix } => {
                self.capture_state(ctx);
                if let Some(r) = rip_fix {
                    self.exit_state.rip = r;
                }
                if let Some(a) = rax_fix {
                    self.exit_state.gprs[gpr::EAX] = a;
                }
                SignalAction::ExitToHost
            }
        }
    }

    /// Escapes first: for 32-bit code a 64-bit system call from below 4 GiB, or any event in
    /// 64-bit mode; for 64-bit code any event outside it (but the compat fast-syscall path,
    /// which Intel takes for SYSENTER in 64-bit code too). The compat fast-syscall return is
    /// told apart before the 64-bit check, as its RIP can be above 4 GiB too. `None`: the
    /// signal interrupted the guest's own code.
    #[inline]
    fn escape_check(&mut self, ctx: &mut SignalContext<'_>) -> Option<Outcome> {
        if self.long_regs.is_some() {
            self.follow_mode_switch(ctx);
        }
        let mc = &ctx.uc.mc;
        if self.code64() {
            return self.escape_check_64(ctx);
        }
        if ctx.sig == libc::SIGSYS && ctx.arch == AUDIT_ARCH_X86_64 {
            self.escape(ctx, EscapeKind::HostSyscall, ctx.call_addr, 0);
            return Some(Outcome::Exit);
        }
        if mc.cs == HOST_CS32 && (mc.rip >> 32 != 0 || self.in_vdso_low(mc.rip)) {
            return Some(self.compat_fast_syscall(ctx));
        }
        if mc.cs == HOST_CS64 || mc.rip >> 32 != 0 {
            // Diagnostics: the signal and the code selector it interrupted.
            let diagnostic = ((ctx.sig as u32) << 16) | u32::from(mc.cs);
            self.escape(ctx, EscapeKind::LongMode, mc.rip, diagnostic);
            return Some(Outcome::Exit);
        }
        None
    }

    /// In long mode, guest code may switch between 64-bit and compatibility mode itself, by a
    /// far transfer to the host's other user code selector (Linux's 0x23 and 0x33, a Debian
    /// guest's too): the monitor goes on in the mode the signal found, as the CPU did. The
    /// exit reports that selector for the emulator to reload from the guest's own GDT, with the
    /// host descriptor's kind, which the guest's must match (else the emulator contains the
    /// run as an escape). The compat fast-syscall return (Intel's SYSENTER from 64-bit code
    /// lands on CS 0x23 in the vDSO's image) is no switch.
    fn follow_mode_switch(&mut self, ctx: &SignalContext<'_>) {
        let (cs, rip) = (ctx.uc.mc.cs, ctx.uc.mc.rip);
        let to64 = match (self.code64, cs) {
            (true, HOST_CS32) if rip >> 32 == 0 && !self.in_vdso_low(rip) => false,
            (false, HOST_CS64) => true,
            _ => return,
        };
        self.code64 = to64;
        self.mode_switched = true;
        self.installed[seg::CS] = cs;
        // Both host descriptors are flat.
        self.cs_base = 0;
    }

    /// The compat fast-syscall path (SYSCALL on AMD, SYSENTER on Intel): the kernel has set RIP
    /// to its vDSO landing pad and CS/SS to its own selectors; for SYSCALL it stored the
    /// guest's EBP in the RCX slot and loaded EBP from [ESP], and the return EIP (hardware
    /// RCX) is gone; for SYSENTER see below. With SIGSYS the
    /// call was trapped by seccomp (EAX = its number); otherwise reading [ESP] failed, the
    /// kernel returned -EFAULT without a system call and the IRET to the landing pad faulted
    /// (EAX is then -EFAULT, not the guest's): on AMD at the 64-bit pad, on Intel at its low
    /// 32 bits, in compatibility mode.
    pub(super) fn compat_fast_syscall(&mut self, ctx: &SignalContext<'_>) -> Outcome {
        let rcx = ctx.uc.mc.rcx;
        let instruction = if self.amd {
            SyscallInstruction::Syscall
        } else {
            SyscallInstruction::Sysenter
        };
        self.set_exit(ExitReason::SystemCall { instruction });
        self.exit.eip_lost = true;
        // SYSENTER of compatibility-mode code, trapped by seccomp: SYSENTER saves nothing and
        // its effect depends on no register but the MSRs, so only EIP and ESP are lost and
        // neither matters. The host kernel took the user stack from EBP (the vDSO's
        // convention) into RSP and reloaded EBP from it; ECX and EDX are the guest's.
        // R8..R15 and the upper halves (the kernel's entry clears them) are not this code's.
        // The emulator carries out SYSENTER at this state (ABI 10).
        let sysenter_exact = !self.amd
            && ctx.sig == libc::SIGSYS
            && !self.entry.code64()
            && !self.mode_switched
            && ctx.uc.mc.eflags & EFL_TF == 0;
        self.exit.ecx_clobbered = !sysenter_exact;
        self.capture_state(ctx);
        let st = &mut self.exit_state;
        st.rip = 0;
        if ctx.sig == libc::SIGSYS {
            st.gprs[gpr::EAX] = u64::from(ctx.syscall as u32);
        }
        if sysenter_exact {
            st.gprs[gpr::EBP] = u64::from(ctx.uc.mc.rsp as u32);
        } else {
            st.gprs[gpr::ECX] = 0;
            st.gprs[gpr::EBP] = u64::from(rcx as u32);
        }
        st.segs[seg::CS].selector = self.installed[seg::CS];
        st.segs[seg::SS].selector = self.installed[seg::SS];
        Outcome::Exit
    }

    /// A fault or trap of the guest's code other than #DB (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
    /// SIGTRAP for #BP), and any other signal, by vector. A page fault the mirror can fill
    /// resumes the guest.
    #[inline]
    fn fault_exit(&mut self, ctx: &SignalContext<'_>) -> Outcome {
        let mc = &ctx.uc.mc;
        let rip = mc.rip;
        let err = mc.err as u32;
        match (ctx.sig, mc.trapno) {
            (libc::SIGSEGV, vector::PF) => {
                let linear = if self.code64() {
                    mc.cr2
                } else {
                    mc.cr2 & LOW32
                };
                return self.page_fault(linear, mc.err);
            }
            (libc::SIGSEGV, vector::GP | vector::NP | vector::TS) => {
                self.gp_exit(rip, mc.trapno, err)
            }
            (libc::SIGSEGV, vector::OF) => {
                return Outcome::capture_at(self.int_trap(vector::OF as u8, rip))
            }
            (libc::SIGILL, _) => self.set_exit(ExitReason::InvalidOpcode),
            (libc::SIGFPE, vector::MF) => self.set_exit(ExitReason::X87Exception),
            (libc::SIGFPE, vector::XM) => self.set_exit(ExitReason::SimdException),
            (libc::SIGFPE, vector::DE) => self.set_exit(ExitReason::DivideError),
            (libc::SIGTRAP, vector::BP) => {
                return Outcome::capture_at(self.int_trap(vector::BP as u8, rip))
            }
            (libc::SIGBUS | libc::SIGSEGV, t) => self.other_exception(t as u32, Some(err)),
            (_, t) => self.other_exception(t as u32, None),
        }
        Outcome::CAPTURE
    }

    /// #GP, #NP or #TS (`trapno`): names the instruction behind it (RDTSC and CPUID fault by
    /// the jail's design; privileged instructions, segment loads and INT n by the host's).
    fn gp_exit(&mut self, rip: u64, trapno: u64, err: u32) {
        let mut b = [0u8; 15];
        let n = self.read_code(rip, &mut b);
        match classify_gp(&b[..n], err, self.code64()) {
            GpKind::Rdtsc => self.set_exit(ExitReason::Rdtsc { rdtscp: false }),
            GpKind::Rdtscp => self.set_exit(ExitReason::Rdtsc { rdtscp: true }),
            GpKind::Cpuid => self.set_exit(ExitReason::Cpuid),
            GpKind::Privileged => self.set_exit(ExitReason::Privileged),
            GpKind::SegmentLoad => self.set_exit(ExitReason::SegmentLoad),
            GpKind::SoftwareInterrupt(v) => {
                self.set_exit(ExitReason::SoftwareInterrupt { vector: v });
            }
            GpKind::Other if trapno == vector::GP => {
                self.set_exit(ExitReason::GeneralProtection { error_code: err });
            }
            GpKind::Other => self.other_exception(trapno as u32, Some(err)),
        }
    }

    /// The host's #DB at `rip`; Linux's si_code (`code`) says what DR6 held (`get_si_code`).
    fn debug_exit(&mut self, code: i32, rip: u64) -> Outcome {
        match code {
            // DR6.BS: a single step, after an instruction that ran with TF set. The state
            // stays after it; the emulator delivers the #DB.
            libc::TRAP_TRACE => {
                self.set_exit(ExitReason::SingleStep);
                Outcome::CAPTURE
            }
            // No cause in DR6: ICEBP (F1), reported where this host reports it.
            libc::TRAP_BRKPT => {
                self.other_exception(vector::DB as u32, None);
                Outcome::capture_at(self.rewind(rip, u64::from(self.icebp_rip.rewind())))
            }
            // A debug-register hit: the executor arms none, so it is a debugger's on the
            // executor (ptrace), not the guest's.
            _ => Outcome::Resume,
        }
    }

    /// A system call from compatibility mode (or INT 0x80 from 64-bit code, which the host
    /// runs as one), trapped by seccomp: named by the two bytes before the reported address,
    /// with EAX (the number) restored from the seccomp data. From 64-bit code RAX's upper
    /// half is lost (the host's INT 0x80 entry keeps the number zero-extended) and reported
    /// zero: inexact only for a guest kernel that reads it, which Linux's does not (its own
    /// INT 0x80 entry truncates it, and the result overwrites all of RAX).
    fn sigsys_i386(&mut self, ctx: &SignalContext<'_>) -> Outcome {
        let after = if self.code64() {
            ctx.call_addr
        } else {
            u64::from(ctx.call_addr as u32)
        };
        let rax_fix = Some(u64::from(ctx.syscall as u32));
        let mut rip_fix = Some(self.rewind(after, 2));
        match self.code_bytes_before(after, 2) {
            Some([0xcd, 0x80]) => {
                self.set_exit(ExitReason::SoftwareInterrupt { vector: 0x80 });
            }
            Some([0x0f, 0x05]) => {
                self.set_exit(ExitReason::SystemCall {
                    instruction: SyscallInstruction::Syscall,
                });
                self.exit.ecx_clobbered = true;
            }
            Some([0x0f, 0x34]) => {
                self.set_exit(ExitReason::SystemCall {
                    instruction: SyscallInstruction::Sysenter,
                });
            }
            _ => {
                // SYSENTER on Intel lands at the vDSO's return point: the registers were
                // rewritten by the host kernel. Report it as SYSENTER at EIP.
                self.set_exit(ExitReason::SystemCall {
                    instruction: SyscallInstruction::Sysenter,
                });
                self.exit.ecx_clobbered = true;
                rip_fix = None;
            }
        }
        Outcome::Capture { rip_fix, rax_fix }
    }

    /// The budget timer's signal. The timer is re-armed for every run; a signal that arrives
    /// while it is still armed is a stale expiry of an earlier run (pending while the
    /// executor's own code ran). Asking the timer, not the clock, also gets an expiry right
    /// that came before the run's start time was taken, whose signal merged with a stale one:
    /// judged by the clock it looked early and the run never ended.
    fn timer_exit(&mut self) -> Outcome {
        if self.host.timer_pending(self.timer) {
            return Outcome::Resume;
        }
        self.set_exit(ExitReason::BudgetExpired);
        Outcome::CAPTURE
    }

    /// A #BP (`vector` 3) or #OF (`vector` 4) trap reported at `rip` (after the instruction):
    /// sets the exit for the instruction that raised it and returns the RIP of its first byte.
    fn int_trap(&mut self, vector: u8, rip: u64) -> u64 {
        let insn = trap_insn(vector, self.code_bytes_before(rip, 2));
        match insn {
            TrapInsn::Int3 => self.set_exit(ExitReason::Breakpoint),
            TrapInsn::Into => self.set_exit(ExitReason::Overflow),
            TrapInsn::IntN(v) => {
                self.set_exit(ExitReason::SoftwareInterrupt { vector: v });
            }
        }
        self.rewind(rip, u64::from(insn.rewind()))
    }

    /// `rip` moved back by `n` bytes, wrapping as the entry's code does (at 4 GiB outside
    /// 64-bit code).
    fn rewind(&self, rip: u64, n: u64) -> u64 {
        let back = rip.wrapping_sub(n);
        if self.code64() {
            back
        } else {
            back & LOW32
        }
    }

    /// Fills `exit_state` from the signal context: the kernel's 64-bit registers whole for
    /// 64-bit code; for 32-bit code their low halves (what the guest has in that mode; the
    /// upper halves are the host's view), and R8..R15 stay the entry's, which 32-bit code
    /// cannot reach.
    pub(super) fn capture_state(&mut self, ctx: &SignalContext<'_>) {
        let mc = &ctx.uc.mc;
        // A run that entered in 64-bit code or switched modes reports whole registers
        // (compatibility-mode code leaves R8..R15 and the upper halves as 64-bit code set them).
        let code64 = self.entry.code64() || self.mode_switched;
        let out = &mut self.exit_state;
        *out = self.entry;
        let width = |v: u64| if code64 { v } else { v & LOW32 };
        let legacy = [
            mc.rax, mc.rcx, mc.rdx, mc.rbx, mc.rsp, mc.rbp, mc.rsi, mc.rdi,
        ];
        for (d, s) in out.gprs[..gpr::LEGACY_COUNT].iter_mut().zip(legacy) {
            *d = width(s);
        }
        if code64 {
            out.gprs[gpr::R8..].copy_from_slice(&mc.r);
        }
        out.rip = width(mc.rip);
        out.rflags = width(mc.eflags & !EFL_RF);
        let [ds, es, fs, gs] = ctx.data_segs;
        out.segs[seg::ES].selector = es;
        out.segs[seg::CS].selector = mc.cs;
        out.segs[seg::SS].selector = mc.ss;
        out.segs[seg::DS].selector = ds;
        out.segs[seg::FS].selector = fs;
        out.segs[seg::GS].selector = gs;
        for s in out.segs.iter_mut() {
            s.flags = 0;
        }
        if let (true, Some([fs_base, gs_base])) = (code64, ctx.seg_bases) {
            // 64-bit code may have moved them (WRFSBASE, or a selector load).
            out.segs[seg::FS].base = fs_base;
            out.segs[seg::GS].base = gs_base;
        }
        if let Some(fp) = ctx.fpstate {
            let n = fp.len().min(out.xsave.0.len());
            out.xsave.0[..n].copy_from_slice(&fp[..n]);
            if n < header::END {
                // Legacy-only frame: mark x87/SSE as present, clear the header.
                out.xsave.0[header::XSTATE_BV..header::END].fill(0);
                out.xsave
                    .set_u64_at(header::XSTATE_BV, xfeature::X87 | xfeature::SSE);
            }
        }
        let bv = out.xsave.xstate_bv() & self.entry.xcr0;
        out.xsave.set_u64_at(header::XSTATE_BV, bv);
        out.xsave.0[sw::START..sw::END].fill(0);
    }

    /// True when `rip` lies in the low 32 bits' image of the executor's vDSO: where Intel CPUs
    /// land after the kernel's compat fast-syscall return (a 64-bit landing pad, truncated by
    /// an IRET to compatibility mode). A guest that jumped to the host's 32-bit code selector
    /// and faulted there is taken for the same, and its run fails the same way.
    pub(super) fn in_vdso_low(&self, rip: u64) -> bool {
        self.vdso != 0 && (rip as u32).wrapping_sub(self.vdso as u32) < VDSO_SPAN
    }
}
