//! The monitor: per-run state of the executor, the entry-frame builder, the LDT mirror, demand
//! paging and the signal-handler logic that turns host signals into guest exits.
//! Everything here runs without allocating (the signal handler included).

use super::sys::{self, RamMapping, SignalAction, SignalContext};
use guest_paging::{self as paging, Access, PagingRegs, WalkError};
use plex86_executor::decode::{classify_gp, trap_insn, GpKind, IcebpRip, TrapInsn};
use plex86_executor::frame::{self, EntryFrame, EntrySegs, FpxSwBytes, KStack, UserDesc};
use plex86_executor::seccomp::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use plex86_executor::shadow::{Mirror, MirrorOps, Shadow, PROT_EXEC, PROT_WRITE};
use plex86_protocol::{
    self as protocol, escape, seg, GuestState, RawExit, RawReason, EXIT_ECX_CLOBBERED,
    EXIT_EIP_LOST, EXIT_HAS_ERROR_CODE, MAX_CODE_PAGES,
};

/// The host's 64-bit user code selector.
const HOST_CS64: u16 = 0x33;
/// The host's 32-bit user code selector (the kernel's compat syscall frames use it).
const HOST_CS32: u16 = 0x23;
/// An upper bound of the vDSO's text: the compat landing pad lies within it.
const VDSO_SPAN: u32 = 64 << 10;
const EFL_RF: u64 = 1 << 16;

/// The executor's mmap wrappers as [`MirrorOps`].
pub struct HostMirror;

impl MirrorOps for HostMirror {
    fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32> {
        sys::mirror_map(lin, phys, prot)
    }
    fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32> {
        sys::mirror_unmap(u64::from(lin), u64::from(pages) * 4096)
    }
    fn unmap_all(&mut self) -> Result<(), i32> {
        sys::mirror_unmap(sys::MIRROR_START, sys::MIRROR_END - sys::MIRROR_START)
    }
    fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32> {
        sys::mirror_protect(lin, prot)
    }
}

/// The executor's state.
pub struct Monitor {
    /// Guest RAM above 4 GiB.
    pub ram: RamMapping,
    ram_ok: Box<[u64]>,
    ram_pages: u64,
    /// The mirror record.
    pub shadow: Shadow,
    regs: PagingRegs,
    /// Native selectors installed for ES, CS, SS, DS, FS, GS.
    installed: [u16; 6],
    cs_base: u32,
    ldt: [Option<UserDesc>; 6],
    /// The request's state (entry).
    pub entry: GuestState,
    /// The exit being built.
    pub exit: RawExit,
    /// The state at the exit.
    pub exit_state: GuestState,
    /// The entry frame.
    pub frame: EntryFrame,
    /// Data segment selectors (DS, ES, FS, GS) and FS/GS bases for the entry trampoline.
    pub entry_data_segs: EntrySegs,
    sw: FpxSwBytes,
    altstack: KStack,
    /// Budget clock id and timer.
    pub clock: i32,
    /// Budget timer id.
    pub timer: i32,
    /// Start of the current run (clock ns).
    pub start_ns: u64,
    /// Budget of the current run.
    pub budget_ns: u64,
    /// Demand fills that end a run (`LibArea::max_fills`; 0 = no limit).
    pub max_fills: u32,
    /// Host cost of a mirror-region fault delivered to a handler and returned from, measured
    /// at start-up ([`sys::fault_round_trip_ns`]): the part of a fill the handler cannot time.
    pub fault_ns: u64,
    /// Where the host reports RIP for ICEBP, measured at start-up ([`sys::probe_icebp_rip`]).
    pub icebp_rip: IcebpRip,
    /// True while guest code runs.
    pub in_guest: bool,
    /// Set when the run ended in a guest escape.
    pub escaped: bool,
    /// The host CPU is AMD (SYSCALL rather than SYSENTER reaches the compat fast path).
    pub amd: bool,
    /// Address of the executor's vDSO (AT_SYSINFO_EHDR), which the compat fast-syscall
    /// return lands in.
    vdso: u64,
}

impl Monitor {
    /// Builds the monitor (setup time: allocates its tables).
    pub fn new(
        ram: RamMapping,
        ram_size: u64,
        ranges: &[protocol::RamRange],
        sw: FpxSwBytes,
        altstack: KStack,
        clock: i32,
        timer: i32,
    ) -> Box<Monitor> {
        let ram_pages = ram_size / 4096;
        let mut ram_ok = vec![0u64; (ram_pages as usize).div_ceil(64)].into_boxed_slice();
        for r in ranges {
            let end = r.end.min(ram_size);
            let mut p = r.start / 4096;
            while p < end / 4096 {
                ram_ok[(p / 64) as usize] |= 1 << (p % 64);
                p += 1;
            }
        }
        Box::new(Monitor {
            ram,
            ram_ok,
            ram_pages,
            shadow: Shadow::new(ram_pages as usize),
            regs: PagingRegs::default(),
            installed: [0; 6],
            cs_base: 0,
            ldt: [None; 6],
            entry: GuestState::default(),
            exit: RawExit::ZERO,
            exit_state: GuestState::default(),
            frame: EntryFrame::new(),
            entry_data_segs: EntrySegs::default(),
            sw,
            altstack,
            clock,
            timer,
            start_ns: 0,
            budget_ns: 0,
            max_fills: 0,
            fault_ns: 0,
            icebp_rip: IcebpRip::After,
            in_guest: false,
            escaped: false,
            amd: is_amd(),
            vdso: sys::vdso_base(),
        })
    }

    fn is_ram(&self, ppn: u64) -> bool {
        ppn < self.ram_pages && self.ram_ok[(ppn / 64) as usize] & (1 << (ppn % 64)) != 0
    }

    /// Applies one MMU command.
    pub fn command(&mut self, kind: u32, addr: u64) -> Result<(), i32> {
        let ops = &mut HostMirror;
        match kind {
            protocol::cmd::FLUSH_ALL => self.shadow.flush_all(ops),
            protocol::cmd::FLUSH_NON_GLOBAL => self.shadow.flush_non_global(ops),
            protocol::cmd::INVALIDATE_PAGE => self
                .shadow
                .invalidate(ops, ((addr & 0xffff_ffff) >> 12) as u32),
            protocol::cmd::WRITE_PROTECT_PHYS => self.shadow.write_protect(ops, addr >> 12),
            _ => Err(libc::EINVAL),
        }
    }

    /// Installs the segments of `self.entry` in the LDT (only what changed) and computes the
    /// native selectors.
    fn install_segments(&mut self) -> Result<(), i32> {
        let mut want: [Option<UserDesc>; 6] = [None; 6];
        for (i, s) in self.entry.segs.iter().enumerate() {
            if s.is_null() && i != seg::CS && i != seg::SS {
                self.installed[i] = s.selector;
                continue;
            }
            self.installed[i] = protocol::native_selector(s.selector);
            let t = s.seg_type();
            let code = t & 8 != 0;
            let contents = if code {
                2 | ((t >> 2) & 1)
            } else {
                (t >> 2) & 1
            };
            // Data: read-only when W is clear; code: execute-only when R is clear.
            let read_exec_only = t & 2 == 0;
            let flags = u32::from(s.db())
                | (u32::from(contents) << 1)
                | (u32::from(read_exec_only) << 3)
                | (u32::from(s.g()) << 4)
                | (u32::from(!s.present()) << 5)
                | (u32::from(s.avl()) << 6);
            want[i] = Some(UserDesc {
                entry_number: u32::from(protocol::native_selector(s.selector) >> 3),
                base_addr: s.base,
                limit: s.limit,
                flags,
            });
        }
        // Clear entries no longer wanted.
        for old in self.ldt.iter().flatten() {
            if !want
                .iter()
                .flatten()
                .any(|w| w.entry_number == old.entry_number)
            {
                sys::write_ldt(&UserDesc::empty(old.entry_number))?;
            }
        }
        for (i, w) in want.iter().enumerate() {
            let Some(w) = w else { continue };
            if want[..i]
                .iter()
                .flatten()
                .any(|p| p.entry_number == w.entry_number)
            {
                continue;
            }
            if !self.ldt.iter().flatten().any(|o| o == w) {
                sys::write_ldt(w)?;
            }
        }
        self.ldt = want;
        self.cs_base = self.entry.segs[seg::CS].base;
        Ok(())
    }

    /// Prepares the entry frame for `self.entry`.
    pub fn prepare_entry(&mut self) -> Result<(), i32> {
        self.install_segments()?;
        let st = &self.entry;
        self.regs = PagingRegs::new(st.cr0, st.cr3, st.cr4, st.efer);
        let g = |i: usize| u64::from(st.gprs[i]);
        let fpstate_addr = self.frame.fpstate_addr();
        let mc = &mut self.frame.uc.mc;
        mc.r = [0; 8];
        mc.rax = g(0);
        mc.rcx = g(1);
        mc.rdx = g(2);
        mc.rbx = g(3);
        mc.rsp = g(4);
        mc.rbp = g(5);
        mc.rsi = g(6);
        mc.rdi = g(7);
        mc.rip = u64::from(st.eip);
        mc.eflags = u64::from(st.eflags);
        mc.cs = self.installed[seg::CS];
        mc.ss = self.installed[seg::SS];
        mc.fs = 0;
        mc.gs = 0;
        mc.err = 0;
        mc.trapno = 0;
        mc.oldmask = 0;
        mc.cr2 = 0;
        mc.fpstate = fpstate_addr;
        self.frame.uc.flags =
            frame::UC_FP_XSTATE | frame::UC_SIGCONTEXT_SS | frame::UC_STRICT_RESTORE_SS;
        self.frame.uc.link = 0;
        self.frame.uc.stack = self.altstack;
        self.frame.uc.sigmask = 0;
        // XSAVE image: the guest's bytes, the header masked to the guest's XCR0, the kernel's
        // software bytes and the trailing magic.
        let n = self.sw.xstate_size as usize;
        let fp = &mut self.frame.fpstate;
        fp[..n].copy_from_slice(&st.xsave.0[..n]);
        let bv = st.xsave.xstate_bv() & st.xcr0;
        fp[512..520].copy_from_slice(&bv.to_le_bytes());
        fp[464..468].copy_from_slice(&frame::FP_XSTATE_MAGIC1.to_le_bytes());
        fp[468..472].copy_from_slice(&self.sw.extended_size.to_le_bytes());
        fp[472..480].copy_from_slice(&self.sw.xfeatures.to_le_bytes());
        fp[480..484].copy_from_slice(&self.sw.xstate_size.to_le_bytes());
        fp[484..512].fill(0);
        fp[n..n + 4].copy_from_slice(&frame::FP_XSTATE_MAGIC2.to_le_bytes());
        // A null FS/GS gets base 0, not whatever the CPU leaves (see plex86_enter). Nothing
        // else the guest can read in 64-bit mode holds a host value: every GPR (R8-R15 zero,
        // upper halves zero), RFLAGS and the XSAVE state come from this frame; DS/ES/SS/CS
        // bases are not readable in 64-bit mode (and are the guest's descriptors' anyway).
        let base = |i: usize| {
            let s = &self.entry.segs[i];
            if s.is_null() {
                0
            } else {
                u64::from(s.base)
            }
        };
        self.entry_data_segs = EntrySegs {
            sel: [
                self.installed[seg::DS],
                self.installed[seg::ES],
                self.installed[seg::FS],
                self.installed[seg::GS],
            ],
            fs_base: base(seg::FS),
            gs_base: base(seg::GS),
        };
        self.exit = RawExit::ZERO;
        self.escaped = false;
        Ok(())
    }

    /// Reads up to 15 instruction bytes at linear `lin` through the guest's page tables
    /// (without setting A/D bits). Returns the number of bytes read.
    fn read_code(&self, lin: u32, buf: &mut [u8; 15]) -> usize {
        let ram_only = |pa: u64, b: &mut [u8]| self.is_ram(pa >> 12) && self.ram.read(pa, b);
        paging::read_linear(&self.ram, &self.regs, lin, buf, ram_only)
    }

    fn code_bytes_before(&self, eip: u32, n: u32) -> Option<[u8; 2]> {
        let mut b = [0u8; 15];
        let got = self.read_code(self.cs_base.wrapping_add(eip.wrapping_sub(n)), &mut b);
        (got >= 2).then_some([b[0], b[1]])
    }

    fn set_exit(&mut self, reason: RawReason) {
        self.exit.reason = reason as u32;
    }

    /// Fills `exit_state` from the signal context.
    fn capture_state(&mut self, ctx: &SignalContext<'_>) {
        let mc = &ctx.uc.mc;
        let out = &mut self.exit_state;
        *out = self.entry;
        out.gprs = [
            mc.rax as u32,
            mc.rcx as u32,
            mc.rdx as u32,
            mc.rbx as u32,
            mc.rsp as u32,
            mc.rbp as u32,
            mc.rsi as u32,
            mc.rdi as u32,
        ];
        out.eip = mc.rip as u32;
        out.eflags = (mc.eflags & !EFL_RF) as u32;
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
        if let Some(fp) = ctx.fpstate {
            let n = fp.len().min(out.xsave.0.len());
            out.xsave.0[..n].copy_from_slice(&fp[..n]);
            if n < 576 {
                // Legacy-only frame: mark x87/SSE as present, clear the header.
                out.xsave.0[512..576].fill(0);
                out.xsave.0[512] = 3;
            }
        }
        let bv = out.xsave.xstate_bv() & self.entry.xcr0;
        out.xsave.set_u64_at(512, bv);
        out.xsave.0[464..512].fill(0);
    }

    /// Demand paging: returns `Some(Resume)` when the fault was handled in place, else fills
    /// the exit and returns `None`.
    fn page_fault(&mut self, linear: u32, host_err: u64) -> Option<SignalAction> {
        let start_ns = sys::clock_ns(self.clock);
        let access = if host_err & 0x10 != 0 {
            Access::Fetch
        } else if host_err & 2 != 0 {
            Access::Write
        } else {
            Access::Read
        };
        self.exit.linear = linear;
        self.exit.access = protocol::access::encode(access);
        if self.already_allows(linear >> 12, access) {
            // The mirror already allows this access, so the fault is not a missing fill: the
            // host kernel's UMIP emulation (SGDT, SIDT, SMSW...) reports the start of an
            // operand whose other end lies on an unmirrored page. The emulator performs it.
            self.set_exit(RawReason::NeedsEmulation);
            return None;
        }
        let t = match paging::walk(&self.ram, &self.regs, linear, access, true) {
            Ok(t) => t,
            Err(WalkError::Fault(code)) => {
                self.exit.error_code = code;
                self.set_exit(RawReason::PageFault);
                return None;
            }
            Err(WalkError::TableNotInRam) => {
                self.set_exit(RawReason::NeedsEmulation);
                return None;
            }
        };
        let page = linear & !0xfff;
        let ppn = t.phys_page >> 12;
        if u64::from(page) < sys::MIRROR_START || !self.is_ram(ppn) {
            self.set_exit(RawReason::NeedsEmulation);
            return None;
        }
        let mut writable = t.writable && t.dirty;
        if self.shadow.is_wp(ppn) {
            if access == Access::Write {
                let n = self.exit.n_code_pages as usize;
                if n >= MAX_CODE_PAGES {
                    self.set_exit(RawReason::CodeLogFull);
                    return None;
                }
                self.exit.code_pages[n] = ppn << 12;
                self.exit.n_code_pages += 1;
                self.shadow.clear_wp(ppn);
            } else {
                writable = false;
            }
        }
        let ops = &mut HostMirror;
        let mirror = Mirror::of(&t, writable);
        let mut r = self.shadow.insert(ops, page >> 12, mirror);
        if r == Err(libc::ENOMEM) {
            // Too many mappings (vm.max_map_count): start over.
            let _ = self.shadow.flush_all(ops);
            r = self.shadow.insert(ops, page >> 12, mirror);
        }
        if r.is_err() {
            self.set_exit(RawReason::NeedsEmulation);
            return None;
        }
        self.exit.demand_fills = self.exit.demand_fills.wrapping_add(1);
        // Fill time is host work, not guest work: the library's back-off subtracts it.
        let handler_ns = sys::clock_ns(self.clock).wrapping_sub(start_ns);
        self.exit.fill_ns = self
            .exit
            .fill_ns
            .saturating_add(handler_ns.saturating_add(self.fault_ns));
        if self.max_fills != 0 && self.exit.demand_fills >= self.max_fills {
            // The page is mirrored; the access that faulted re-executes after the emulator
            // hands the guest back (or the emulator performs it).
            self.set_exit(RawReason::FillLimit);
            return None;
        }
        Some(SignalAction::Resume)
    }

    /// True when `rip` lies in the low 32 bits' image of the executor's vDSO: where Intel CPUs
    /// land after the kernel's compat fast-syscall return (a 64-bit landing pad, truncated by
    /// an IRET to compatibility mode). A guest that jumped to the host's 32-bit code selector
    /// and faulted there is taken for the same, and its run fails the same way.
    fn in_vdso_low(&self, rip: u64) -> bool {
        self.vdso != 0 && (rip as u32).wrapping_sub(self.vdso as u32) < VDSO_SPAN
    }

    /// True when linear page `lpn` is mirrored with the permission `access` needs.
    fn already_allows(&self, lpn: u32, access: Access) -> bool {
        let Some(m) = self.shadow.lookup(lpn) else {
            return false;
        };
        match access {
            Access::Read => true,
            Access::Write => m.prot & PROT_WRITE != 0,
            Access::Fetch => m.prot & PROT_EXEC != 0,
        }
    }

    /// The signal handler's logic.
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
        let mc = ctx.uc.mc;
        // Escapes first: a 64-bit system call from below 4 GiB, or any event in 64-bit mode.
        if ctx.sig == libc::SIGSYS && ctx.arch == AUDIT_ARCH_X86_64 {
            self.escape(escape::HOST_SYSCALL, ctx.call_addr);
            return SignalAction::ExitToHost;
        }
        if mc.cs == HOST_CS32 && (mc.rip >> 32 != 0 || self.in_vdso_low(mc.rip)) {
            // The compat fast-syscall path (SYSCALL on AMD, SYSENTER on Intel): the kernel has
            // set RIP to its vDSO landing pad, CS/SS to its own selectors, stored the guest's
            // EBP in the RCX slot and loaded EBP from [ESP]. The return EIP (hardware RCX) is
            // gone. With SIGSYS the call was trapped by seccomp (EAX = its number); otherwise
            // reading [ESP] failed, the kernel returned -EFAULT without a system call and the
            // IRET to the landing pad faulted (EAX is then -EFAULT, not the guest's): on AMD
            // at the 64-bit pad, on Intel at its low 32 bits, in compatibility mode.
            self.set_exit(RawReason::SystemCall);
            self.exit.vector = u32::from(!self.amd);
            self.exit.flags |= EXIT_ECX_CLOBBERED | EXIT_EIP_LOST;
            self.capture_state(ctx);
            let st = &mut self.exit_state;
            st.eip = 0;
            if ctx.sig == libc::SIGSYS {
                st.gprs[0] = ctx.syscall as u32;
            }
            st.gprs[1] = 0;
            st.gprs[5] = mc.rcx as u32;
            st.segs[seg::CS].selector = self.installed[seg::CS];
            st.segs[seg::SS].selector = self.installed[seg::SS];
            return SignalAction::ExitToHost;
        }
        if mc.cs == HOST_CS64 || mc.rip >> 32 != 0 {
            self.escape(escape::LONG_MODE, mc.rip);
            // Diagnostics: the signal and the code selector it interrupted.
            self.exit.error_code = ((ctx.sig as u32) << 16) | u32::from(mc.cs);
            return SignalAction::ExitToHost;
        }
        let eip = mc.rip as u32;
        let mut eip_fix: Option<u32> = None;
        let mut eax_fix: Option<u32> = None;
        match (ctx.sig, mc.trapno) {
            (libc::SIGSEGV, 14) => {
                if let Some(a) = self.page_fault(mc.cr2 as u32, mc.err) {
                    return a;
                }
            }
            (libc::SIGSEGV, 13) | (libc::SIGSEGV, 11) | (libc::SIGSEGV, 10) => {
                let mut b = [0u8; 15];
                let n = self.read_code(self.cs_base.wrapping_add(eip), &mut b);
                let err = mc.err as u32;
                match classify_gp(&b[..n], err) {
                    GpKind::Rdtsc => self.set_exit(RawReason::Rdtsc),
                    GpKind::Rdtscp => {
                        self.set_exit(RawReason::Rdtsc);
                        self.exit.vector = 1;
                    }
                    GpKind::Cpuid => self.set_exit(RawReason::Cpuid),
                    GpKind::Privileged => self.set_exit(RawReason::Privileged),
                    GpKind::SegmentLoad => self.set_exit(RawReason::SegmentLoad),
                    GpKind::SoftwareInterrupt(v) => {
                        self.set_exit(RawReason::SoftwareInterrupt);
                        self.exit.vector = u32::from(v);
                    }
                    GpKind::Other if mc.trapno == 13 => {
                        self.set_exit(RawReason::GeneralProtection);
                        self.exit.error_code = err;
                    }
                    GpKind::Other => self.other_exception(mc.trapno as u32, Some(err)),
                }
            }
            (libc::SIGSEGV, 4) => eip_fix = Some(self.int_trap(4, eip)),
            (libc::SIGILL, _) => self.set_exit(RawReason::InvalidOpcode),
            (libc::SIGFPE, 16) => self.set_exit(RawReason::X87Exception),
            (libc::SIGFPE, 19) => self.set_exit(RawReason::SimdException),
            (libc::SIGFPE, 0) => self.set_exit(RawReason::DivideError),
            (libc::SIGTRAP, 3) => eip_fix = Some(self.int_trap(3, eip)),
            // The host's #DB; Linux's si_code says what DR6 held (`get_si_code`).
            (libc::SIGTRAP, 1) => match ctx.code {
                // DR6.BS: a single step, after an instruction that ran with TF set. The state
                // stays after it; the emulator delivers the #DB.
                libc::TRAP_TRACE => self.set_exit(RawReason::SingleStep),
                // No cause in DR6: ICEBP (F1), reported where this host reports it.
                libc::TRAP_BRKPT => {
                    self.other_exception(1, None);
                    eip_fix = Some(eip.wrapping_sub(self.icebp_rip.rewind()));
                }
                // A debug-register hit: the executor arms none, so it is a debugger's on the
                // executor (ptrace), not the guest's.
                _ => return SignalAction::Resume,
            },
            (libc::SIGSYS, _) if ctx.arch == AUDIT_ARCH_I386 => {
                let after = ctx.call_addr as u32;
                eax_fix = Some(ctx.syscall as u32);
                match self.code_bytes_before(after, 2) {
                    Some([0xcd, 0x80]) => {
                        self.set_exit(RawReason::SoftwareInterrupt);
                        self.exit.vector = 0x80;
                        eip_fix = Some(after.wrapping_sub(2));
                    }
                    Some([0x0f, 0x05]) => {
                        self.set_exit(RawReason::SystemCall);
                        self.exit.flags |= EXIT_ECX_CLOBBERED;
                        eip_fix = Some(after.wrapping_sub(2));
                    }
                    Some([0x0f, 0x34]) => {
                        self.set_exit(RawReason::SystemCall);
                        self.exit.vector = 1;
                        eip_fix = Some(after.wrapping_sub(2));
                    }
                    _ => {
                        // SYSENTER on Intel lands at the vDSO's return point: the registers
                        // were rewritten by the host kernel. Report it as SYSENTER at EIP.
                        self.set_exit(RawReason::SystemCall);
                        self.exit.vector = 1;
                        self.exit.flags |= EXIT_ECX_CLOBBERED;
                    }
                }
            }
            (libc::SIGALRM, _) if from_timer => {
                // The timer is re-armed for every run; a signal that arrives while it is still
                // armed is a stale expiry of an earlier run (pending while the executor's own
                // code ran). Asking the timer, not the clock, also gets an expiry right that
                // came before the run's start time was taken, whose signal merged with a stale
                // one: judged by the clock it looked early and the run never ended.
                if sys::timer_pending(self.timer) {
                    return SignalAction::Resume;
                }
                self.set_exit(RawReason::BudgetExpired);
            }
            (libc::SIGBUS, t) => self.other_exception(t as u32, Some(mc.err as u32)),
            (libc::SIGSEGV, t) => self.other_exception(t as u32, Some(mc.err as u32)),
            (_, t) => self.other_exception(t as u32, None),
        }
        self.capture_state(ctx);
        if let Some(e) = eip_fix {
            self.exit_state.eip = e;
        }
        if let Some(a) = eax_fix {
            self.exit_state.gprs[0] = a;
        }
        SignalAction::ExitToHost
    }

    /// A #BP (`vector` 3) or #OF (`vector` 4) trap reported at `eip` (after the instruction):
    /// sets the exit for the instruction that raised it and returns the EIP of its first byte.
    fn int_trap(&mut self, vector: u8, eip: u32) -> u32 {
        let insn = trap_insn(vector, self.code_bytes_before(eip, 2));
        match insn {
            TrapInsn::Int3 => self.set_exit(RawReason::Breakpoint),
            TrapInsn::Into => self.set_exit(RawReason::Overflow),
            TrapInsn::IntN(v) => {
                self.set_exit(RawReason::SoftwareInterrupt);
                self.exit.vector = u32::from(v);
            }
        }
        eip.wrapping_sub(insn.rewind())
    }

    fn other_exception(&mut self, vector: u32, err: Option<u32>) {
        self.set_exit(RawReason::OtherException);
        self.exit.vector = vector.min(31);
        if let Some(e) = err {
            self.exit.flags |= EXIT_HAS_ERROR_CODE;
            self.exit.error_code = e;
        }
    }

    fn escape(&mut self, kind: u32, addr: u64) {
        self.set_exit(RawReason::GuestEscape);
        self.exit.vector = kind;
        self.exit.detail = addr;
        self.exit_state = self.entry;
        self.escaped = true;
    }
}

fn is_amd() -> bool {
    // CPUID leaf 0 vendor "AuthenticAMD" (EBX, EDX, ECX) — also Hygon.
    let r = std::arch::x86_64::__cpuid(0);
    (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
        || (r.ebx, r.edx, r.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
}
