//! The entry side: the guest's segments as LDT entries, and the entry frame.

use super::{GuestRam, Host, Monitor, GUEST_MAXPHYADDR, HOST_CS64, HOST_SS64};
use crate::frame::{self, EntrySegs, UserDesc};
use guest_paging::LongRegs;
use plex86_protocol::xsave::{header, sw, FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2};
use plex86_protocol::{self as protocol, gpr, seg, ExitReason};

impl<R: GuestRam, H: Host> Monitor<R, H> {
    /// Installs the segments of `self.entry` in the LDT (only what changed) and computes the
    /// native selectors.
    /// 64-bit code runs on the host's CS 0x33, whatever its own selector (modify_ldt makes no
    /// 64-bit descriptor: the kernel clears `lm`), and with an SS of 0x2b (Linux's
    /// `__USER_DS`) on the host's 0x2b: SS's descriptor means nothing there but its DPL, 3
    /// either way. Any other SS is mirrored as for 32-bit code, so that a native 0x2b at an
    /// exit always says which it is: the entry's, or the host's that the guest loaded (which
    /// the emulator reloads from the guest's GDT).
    fn install_segments(&mut self) -> Result<(), i32> {
        let mut want: [Option<UserDesc>; 6] = [None; 6];
        let code64 = self.entry.code64();
        for (i, s) in self.entry.segs.iter().enumerate() {
            if code64 && i == seg::CS {
                self.installed[i] = HOST_CS64;
                continue;
            }
            if code64 && i == seg::SS && s.selector == HOST_SS64 {
                self.installed[i] = HOST_SS64;
                continue;
            }
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
                // A descriptor's base is 32 bits: the entry rules refuse a larger one outside
                // 64-bit code, where DS/ES bases mean nothing and FS/GS's come from the
                // entry's WRFSBASE/WRGSBASE.
                base_addr: s.base as u32,
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
                self.host.write_ldt(&UserDesc::empty(old.entry_number))?;
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
                self.host.write_ldt(w)?;
            }
        }
        self.ldt = want;
        // Outside 64-bit code the entry rules refuse bases from 4 GiB up; in it CS has none.
        self.cs_base = if code64 {
            0
        } else {
            self.entry.segs[seg::CS].base as u32
        };
        Ok(())
    }

    /// Prepares the entry frame for `self.entry`.
    pub fn prepare_entry(&mut self) -> Result<(), i32> {
        self.install_segments()?;
        let st = &self.entry;
        self.regs = st.legacy_paging_regs();
        // Long mode's tables whatever the code: compatibility-mode code's 32-bit addresses
        // go through the same 4 levels.
        self.long_regs = st
            .long_mode()
            .then(|| LongRegs::new(st.cr3, st.cr4, st.efer, GUEST_MAXPHYADDR));
        self.code64 = st.code64();
        self.mode_switched = false;
        // Outside long mode only EAX..EDI exist, zero-extended (the entry rules refuse
        // anything in the upper halves or in R8..R15 there). In long mode all 16 go in, for
        // compatibility-mode code too: it cannot reach R8..R15, but it may switch to 64-bit
        // code, which finds them as the guest left them.
        let long = st.long_mode();
        let g = |i: usize| st.gprs[i];
        let fpstate_addr = self.frame.fpstate_addr();
        let mc = &mut self.frame.uc.mc;
        mc.r = if long {
            std::array::from_fn(|i| g(gpr::R8 + i))
        } else {
            [0; 8]
        };
        mc.rax = g(gpr::EAX);
        mc.rcx = g(gpr::ECX);
        mc.rdx = g(gpr::EDX);
        mc.rbx = g(gpr::EBX);
        mc.rsp = g(gpr::ESP);
        mc.rbp = g(gpr::EBP);
        mc.rsi = g(gpr::ESI);
        mc.rdi = g(gpr::EDI);
        mc.rip = st.rip;
        mc.eflags = st.rflags;
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
        put(fp, header::XSTATE_BV, &bv.to_le_bytes());
        put(fp, sw::MAGIC1, &FP_XSTATE_MAGIC1.to_le_bytes());
        put(fp, sw::EXTENDED_SIZE, &self.sw.extended_size.to_le_bytes());
        put(fp, sw::XFEATURES, &self.sw.xfeatures.to_le_bytes());
        put(fp, sw::XSTATE_SIZE, &self.sw.xstate_size.to_le_bytes());
        fp[sw::XSTATE_SIZE + 4..sw::END].fill(0);
        put(fp, n, &FP_XSTATE_MAGIC2.to_le_bytes());
        // 32-bit code: a null FS/GS gets base 0, not whatever the CPU leaves (see
        // plex86_enter). Long-mode code gets the state's bases whatever the selector: a 64-bit
        // process's TLS base rides on a null FS (the entry rules have checked them
        // canonical, as WRFSBASE needs), and compatibility-mode code that switches to 64-bit
        // code must find it there. Nothing else the guest can read in 64-bit mode holds
        // a host value: every GPR, RFLAGS and the XSAVE state come from this frame; DS/ES/SS/
        // CS bases are not readable in 64-bit mode (and are the guest's descriptors' anyway).
        let base = |i: usize| {
            let s = &self.entry.segs[i];
            if s.is_null() && !self.entry.long_mode() {
                0
            } else {
                s.base
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
        self.exit.reset(ExitReason::BudgetExpired);
        self.exit_set = false;
        self.escaped = false;
        Ok(())
    }
}

/// Copies `bytes` into `buf` at `off`.
fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}
