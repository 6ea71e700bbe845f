//! The walk itself: one function per paging mode, A/D updates by compare-and-exchange.

use crate::entry::*;
use crate::*;

pub(crate) const CR0_PG: u32 = 1 << 31;
pub(crate) const CR4_PSE: u32 = 1 << 4;
pub(crate) const CR4_PAE: u32 = 1 << 5;
pub(crate) const CR4_PGE: u32 = 1 << 7;
pub(crate) const EFER_NXE: u64 = 1 << 11;

pub(crate) const MAX_RETRIES: usize = 64;

/// Translates `linear` for a CPL 3 `access`. With `update_ad`, the Accessed bits of the
/// entries used are set, and the Dirty bit of the final entry on a write, with a compare-and-
/// exchange per entry as the hardware does (the walk restarts if an entry changed meanwhile).
/// A/D bits are only set when the whole walk succeeds.
pub fn walk(
    mem: &dyn PhysMemory,
    regs: &PagingRegs,
    linear: u32,
    access: Access,
    update_ad: bool,
) -> Result<Translation, WalkError> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(Translation {
            phys_page: u64::from(linear & !0xfff),
            writable: true,
            dirty: true,
            executable: true,
            global: false,
            size: PageSize::Size4K,
            accessed: true,
        });
    }
    for _ in 0..MAX_RETRIES {
        let r = if regs.cr4 & CR4_PAE != 0 {
            walk_pae(mem, regs, linear, access, update_ad)
        } else {
            walk_2level(mem, regs, linear, access, update_ad)
        };
        match r {
            Step::Done(t) => return t,
            Step::Retry => continue,
        }
    }
    // An entry kept changing under us; report a fault and let the emulator decide.
    Err(WalkError::Fault(fault_code(access, false, false, regs)))
}

enum Step {
    Done(Result<Translation, WalkError>),
    Retry,
}

fn fault_code(access: Access, present: bool, rsvd: bool, regs: &PagingRegs) -> u32 {
    let mut e = pf::U;
    if present {
        e |= pf::P;
    }
    if access == Access::Write {
        e |= pf::W;
    }
    if rsvd {
        e |= pf::RSVD | pf::P;
    }
    if access == Access::Fetch && regs.cr4 & CR4_PAE != 0 && regs.efer & EFER_NXE != 0 {
        e |= pf::ID;
    }
    e
}

/// Checks user permissions of the combined entry bits; returns the fault code on denial.
fn check(
    access: Access,
    user_all: bool,
    rw_all: bool,
    nx_any: bool,
    regs: &PagingRegs,
) -> Result<(), u32> {
    let denied =
        !user_all || (access == Access::Write && !rw_all) || (access == Access::Fetch && nx_any);
    if denied {
        Err(fault_code(access, true, false, regs))
    } else {
        Ok(())
    }
}

/// Sets `bits` in the 32-bit entry at `pa` if missing; `Ok(false)` if the entry changed.
fn set_bits_u32(mem: &dyn PhysMemory, pa: u64, old: u32, bits: u32) -> Result<bool, WalkError> {
    if old & bits == bits {
        return Ok(true);
    }
    mem.cmpxchg_u32(pa, old, old | bits)
        .ok_or(WalkError::TableNotInRam)
}

fn set_bits_u64(mem: &dyn PhysMemory, pa: u64, old: u64, bits: u64) -> Result<bool, WalkError> {
    if old & bits == bits {
        return Ok(true);
    }
    mem.cmpxchg_u64(pa, old, old | bits)
        .ok_or(WalkError::TableNotInRam)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Step::Done(Err(e)),
        }
    };
}

fn walk_2level(
    mem: &dyn PhysMemory,
    regs: &PagingRegs,
    linear: u32,
    access: Access,
    update_ad: bool,
) -> Step {
    let pde_pa = u64::from(regs.cr3 & 0xffff_f000) + u64::from(linear >> 22) * 4;
    let pde = tri!(mem.read_u32(pde_pa).ok_or(WalkError::TableNotInRam));
    if pde as u64 & P == 0 {
        return Step::Done(Err(WalkError::Fault(fault_code(
            access, false, false, regs,
        ))));
    }
    let pde64 = u64::from(pde);
    if pde64 & PS != 0 && regs.cr4 & CR4_PSE != 0 {
        // 4 MiB page; PSE-36 bits 13..20 give physical address bits 32..39; bit 21 reserved.
        if pde & (1 << 21) != 0 {
            return Step::Done(Err(WalkError::Fault(fault_code(access, true, true, regs))));
        }
        if let Err(e) = check(access, pde64 & US != 0, pde64 & RW != 0, false, regs) {
            return Step::Done(Err(WalkError::Fault(e)));
        }
        let mut dirty = pde64 & D != 0;
        if update_ad {
            let bits = A as u32 | if access == Access::Write { D as u32 } else { 0 };
            if !tri!(set_bits_u32(mem, pde_pa, pde, bits)) {
                return Step::Retry;
            }
            dirty |= access == Access::Write;
        }
        let base = u64::from(pde & 0xffc0_0000) | (u64::from((pde >> 13) & 0xff) << 32);
        return Step::Done(Ok(Translation {
            phys_page: base + u64::from(linear & 0x003f_f000),
            writable: pde64 & RW != 0,
            dirty,
            executable: true,
            global: pde64 & G != 0 && regs.cr4 & CR4_PGE != 0,
            size: PageSize::Size4M,
            accessed: update_ad || pde64 & A != 0,
        }));
    }
    let pte_pa = u64::from(pde & 0xffff_f000) + u64::from((linear >> 12) & 0x3ff) * 4;
    let pte = tri!(mem.read_u32(pte_pa).ok_or(WalkError::TableNotInRam));
    let pte64 = u64::from(pte);
    if pte64 & P == 0 {
        return Step::Done(Err(WalkError::Fault(fault_code(
            access, false, false, regs,
        ))));
    }
    let user = pde64 & US != 0 && pte64 & US != 0;
    let rw = pde64 & RW != 0 && pte64 & RW != 0;
    if let Err(e) = check(access, user, rw, false, regs) {
        return Step::Done(Err(WalkError::Fault(e)));
    }
    let mut dirty = pte64 & D != 0;
    if update_ad {
        if !tri!(set_bits_u32(mem, pde_pa, pde, A as u32)) {
            return Step::Retry;
        }
        let bits = A as u32 | if access == Access::Write { D as u32 } else { 0 };
        if !tri!(set_bits_u32(mem, pte_pa, pte, bits)) {
            return Step::Retry;
        }
        dirty |= access == Access::Write;
    }
    Step::Done(Ok(Translation {
        phys_page: u64::from(pte & 0xffff_f000),
        writable: rw,
        dirty,
        executable: true,
        global: pte64 & G != 0 && regs.cr4 & CR4_PGE != 0,
        size: PageSize::Size4K,
        accessed: update_ad || (pde64 & A != 0 && pte64 & A != 0),
    }))
}

/// Reserved bits of PAE paging entries: bits 52..62 always, bit 63 without NXE.
fn pae_reserved(e: u64, regs: &PagingRegs) -> bool {
    let mut mask = 0x7ff0_0000_0000_0000u64;
    if regs.efer & EFER_NXE == 0 {
        mask |= NX;
    }
    e & mask != 0
}

fn walk_pae(
    mem: &dyn PhysMemory,
    regs: &PagingRegs,
    linear: u32,
    access: Access,
    update_ad: bool,
) -> Step {
    let pdpte_pa = u64::from(regs.cr3 & 0xffff_ffe0) + u64::from(linear >> 30) * 8;
    let pdpte = tri!(mem.read_u64(pdpte_pa).ok_or(WalkError::TableNotInRam));
    if pdpte & P == 0 {
        return Step::Done(Err(WalkError::Fault(fault_code(
            access, false, false, regs,
        ))));
    }
    // Legacy PAE PDPTEs: bits 1, 2, 5..8 and 63 are reserved.
    if pdpte & 0x1e6 != 0 || pdpte & NX != 0 || pae_reserved(pdpte, regs) {
        return Step::Done(Err(WalkError::Fault(fault_code(access, true, true, regs))));
    }
    let nxe = regs.efer & EFER_NXE != 0;
    let pde_pa = (pdpte & 0x000f_ffff_ffff_f000) + u64::from((linear >> 21) & 0x1ff) * 8;
    let pde = tri!(mem.read_u64(pde_pa).ok_or(WalkError::TableNotInRam));
    if pde & P == 0 {
        return Step::Done(Err(WalkError::Fault(fault_code(
            access, false, false, regs,
        ))));
    }
    if pae_reserved(pde, regs) {
        return Step::Done(Err(WalkError::Fault(fault_code(access, true, true, regs))));
    }
    if pde & PS != 0 {
        // 2 MiB page; bits 13..20 reserved.
        if pde & 0x001f_e000 != 0 {
            return Step::Done(Err(WalkError::Fault(fault_code(access, true, true, regs))));
        }
        let nx = nxe && pde & NX != 0;
        if let Err(e) = check(access, pde & US != 0, pde & RW != 0, nx, regs) {
            return Step::Done(Err(WalkError::Fault(e)));
        }
        let mut dirty = pde & D != 0;
        if update_ad {
            let bits = A | if access == Access::Write { D } else { 0 };
            if !tri!(set_bits_u64(mem, pde_pa, pde, bits)) {
                return Step::Retry;
            }
            dirty |= access == Access::Write;
        }
        return Step::Done(Ok(Translation {
            phys_page: (pde & 0x000f_ffff_ffe0_0000) + u64::from(linear & 0x001f_f000),
            writable: pde & RW != 0,
            dirty,
            executable: !nx,
            global: pde & G != 0 && regs.cr4 & CR4_PGE != 0,
            size: PageSize::Size2M,
            accessed: update_ad || pde & A != 0,
        }));
    }
    let pte_pa = (pde & 0x000f_ffff_ffff_f000) + u64::from((linear >> 12) & 0x1ff) * 8;
    let pte = tri!(mem.read_u64(pte_pa).ok_or(WalkError::TableNotInRam));
    if pte & P == 0 {
        return Step::Done(Err(WalkError::Fault(fault_code(
            access, false, false, regs,
        ))));
    }
    if pae_reserved(pte, regs) {
        return Step::Done(Err(WalkError::Fault(fault_code(access, true, true, regs))));
    }
    let nx = nxe && (pde & NX != 0 || pte & NX != 0);
    let user = pde & US != 0 && pte & US != 0;
    let rw = pde & RW != 0 && pte & RW != 0;
    if let Err(e) = check(access, user, rw, nx, regs) {
        return Step::Done(Err(WalkError::Fault(e)));
    }
    let mut dirty = pte & D != 0;
    if update_ad {
        if !tri!(set_bits_u64(mem, pde_pa, pde, A)) {
            return Step::Retry;
        }
        let bits = A | if access == Access::Write { D } else { 0 };
        if !tri!(set_bits_u64(mem, pte_pa, pte, bits)) {
            return Step::Retry;
        }
        dirty |= access == Access::Write;
    }
    Step::Done(Ok(Translation {
        phys_page: pte & 0x000f_ffff_ffff_f000,
        writable: rw,
        dirty,
        executable: !nx,
        global: pte & G != 0 && regs.cr4 & CR4_PGE != 0,
        size: PageSize::Size4K,
        accessed: update_ad || (pde & A != 0 && pte & A != 0),
    }))
}
