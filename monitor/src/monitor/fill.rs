//! Demand paging: a mirror-region fault the guest's page tables allow becomes a mirror fill.

use super::signal::Outcome;
use super::{GuestRam, Host, Monitor};
use crate::shadow::{Mirror, PROT_EXEC, PROT_WRITE};
use guest_paging::{self as paging, Access, Translation, WalkError};
use plex86_protocol::ExitReason;

impl<R: GuestRam, H: Host> Monitor<R, H> {
    /// Demand paging: `Resume` when the fault was handled in place, else the exit is filled and
    /// the run ends with the frame's state.
    #[inline]
    pub(super) fn page_fault(&mut self, linear: u64, host_err: u64) -> Outcome {
        let start_ns = self.host.clock_ns(self.clock);
        let access = if host_err & 0x10 != 0 {
            Access::Fetch
        } else if host_err & 2 != 0 {
            Access::Write
        } else {
            Access::Read
        };
        let emulate = ExitReason::NeedsEmulation { linear, access };
        if self.already_allows(linear >> 12, access) {
            // The mirror already allows this access, so the fault is not a missing fill: the
            // host kernel's UMIP emulation (SGDT, SIDT, SMSW...) reports the start of an
            // operand whose other end lies on an unmirrored page. The emulator performs it.
            self.set_exit(emulate);
            return Outcome::CAPTURE;
        }
        let t = match self.walk(linear, access, true) {
            Ok(t) => t,
            Err(WalkError::Fault(code)) => {
                self.set_exit(ExitReason::PageFault {
                    linear,
                    access,
                    error_code: code,
                });
                return Outcome::CAPTURE;
            }
            // NonCanonical comes from the 4-level walker only (the host faults there with #GP,
            // not #PF: an LA57 host's wider space); either way Bochs does the access.
            Err(WalkError::TableNotInRam | WalkError::NonCanonical) => {
                self.set_exit(emulate);
                return Outcome::CAPTURE;
            }
        };
        let page = linear & !0xfff;
        let ppn = t.phys_page >> 12;
        // Pages outside user space or in S's block the host refuses below: emulated too.
        if page < H::MIRROR_START || !self.is_ram(ppn) {
            self.set_exit(emulate);
            return Outcome::CAPTURE;
        }
        let mut writable = t.writable && t.dirty;
        if self.shadow.is_wp(ppn) {
            if access == Access::Write {
                if self.exit.code_pages.push(ppn << 12).is_err() {
                    self.set_exit(ExitReason::CodeLogFull);
                    return Outcome::CAPTURE;
                }
                self.shadow.clear_wp(ppn);
            } else {
                writable = false;
            }
        }
        let ops = &mut self.host;
        let mirror = Mirror::of(&t, writable);
        let mut r = self.shadow.insert(ops, page >> 12, mirror);
        if r == Err(libc::ENOMEM) {
            // Too many mappings (vm.max_map_count): start over.
            let _ = self.shadow.flush_all(ops);
            r = self.shadow.insert(ops, page >> 12, mirror);
        }
        if r.is_err() {
            self.set_exit(emulate);
            return Outcome::CAPTURE;
        }
        self.exit.demand_fills = self.exit.demand_fills.wrapping_add(1);
        if self.fill_ahead != 0 {
            self.fill_ahead_of(page);
        }
        // Fill time is host work, not guest work: the library's back-off subtracts it.
        let handler_ns = self.host.clock_ns(self.clock).wrapping_sub(start_ns);
        self.exit.fill_ns = self
            .exit
            .fill_ns
            .saturating_add(handler_ns.saturating_add(self.fault_ns));
        if self.max_fills != 0 && self.exit.demand_fills >= self.max_fills {
            // The page is mirrored; the access that faulted re-executes after the emulator
            // hands the guest back (or the emulator performs it).
            self.set_exit(ExitReason::FillLimit);
            return Outcome::CAPTURE;
        }
        Outcome::Resume
    }

    /// Mirrors up to `fill_ahead` pages after `page`, within its 2 MiB region, that the guest
    /// has used already: the Accessed bit set in every entry of their walk, which is not
    /// changed (a TLB could hold such translations too, so the guest sees no difference);
    /// writable only if also Dirty and not write-protected code. Stops at the first page that
    /// does not qualify. Each page mirrored so saves a fault round trip of its own: the stub
    /// executor's fill is a hop through the library and the mapper.
    fn fill_ahead_of(&mut self, page: u64) {
        let region_end = (page | 0x1f_ffff).wrapping_add(1);
        let mut lin = page + 4096;
        let mut filled = 0;
        while filled < self.fill_ahead && lin < region_end {
            let lpn = lin >> 12;
            if self.shadow.lookup(lpn).is_none() {
                let Ok(t) = self.walk(lin, Access::Read, false) else {
                    return;
                };
                let ppn = t.phys_page >> 12;
                if !t.accessed || !self.is_ram(ppn) {
                    return;
                }
                let writable = t.writable && t.dirty && !self.shadow.is_wp(ppn);
                let ops = &mut self.host;
                if self
                    .shadow
                    .insert(ops, lpn, Mirror::of(&t, writable))
                    .is_err()
                {
                    return;
                }
                filled += 1;
            }
            lin += 4096;
        }
    }

    /// The guest's translation of `linear` for `access`: 4 levels in long mode, 64-bit or
    /// compatibility-mode code (2 MiB and 1 GiB pages come back as their 4 KiB piece with the
    /// size recorded, for INVLPG), the 32-bit walker's 2 levels or PAE otherwise. A/D bits are set as the CPU would
    /// (`update_ad`) by both.
    fn walk(&self, linear: u64, access: Access, update_ad: bool) -> Result<Translation, WalkError> {
        match &self.long_regs {
            Some(long) => paging::walk64(&self.ram, long, linear, access, update_ad),
            None => paging::walk(&self.ram, &self.regs, linear as u32, access, update_ad),
        }
    }

    /// True when linear page `lpn` is mirrored with the permission `access` needs.
    #[inline]
    fn already_allows(&self, lpn: u64, access: Access) -> bool {
        let Some(m) = self.shadow.lookup(lpn) else {
            return false;
        };
        match access {
            Access::Read => true,
            Access::Write => m.prot & PROT_WRITE != 0,
            Access::Fetch => m.prot & PROT_EXEC != 0,
        }
    }
}
