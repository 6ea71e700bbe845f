//! Guest page-table walker: 2-level (with PSE 4 MiB pages) and PAE (with 2 MiB pages and NX),
//! for CPL 3 accesses. Pure code over a [`PhysMemory`] so that it is unit-tested in-process and
//! used by the executor over its mapping of guest RAM.

/// Kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

impl Access {
    /// The protocol encoding ([`crate::protocol::access`]).
    pub fn to_raw(self) -> u32 {
        match self {
            Access::Read => crate::protocol::access::READ,
            Access::Write => crate::protocol::access::WRITE,
            Access::Fetch => crate::protocol::access::FETCH,
        }
    }
    /// Decodes the protocol encoding.
    pub fn from_raw(v: u32) -> Option<Access> {
        match v {
            crate::protocol::access::READ => Some(Access::Read),
            crate::protocol::access::WRITE => Some(Access::Write),
            crate::protocol::access::FETCH => Some(Access::Fetch),
            _ => None,
        }
    }
}

/// Guest-physical memory as seen by the walker. Accesses outside RAM return `None`.
pub trait PhysMemory {
    /// Reads an aligned u32.
    fn read_u32(&self, pa: u64) -> Option<u32>;
    /// Reads an aligned u64.
    fn read_u64(&self, pa: u64) -> Option<u64>;
    /// Atomically replaces `old` by `new` at `pa`; `Some(true)` on success.
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool>;
    /// Atomically replaces `old` by `new` at `pa`; `Some(true)` on success.
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool>;
}

/// The control registers that select the paging mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG).
    pub cr0: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4 (PSE, PAE, PGE).
    pub cr4: u32,
    /// EFER (NXE).
    pub efer: u64,
}

const CR0_PG: u32 = 1 << 31;
const CR4_PSE: u32 = 1 << 4;
const CR4_PAE: u32 = 1 << 5;
const CR4_PGE: u32 = 1 << 7;
const EFER_NXE: u64 = 1 << 11;

/// Paging-entry bits (the 64-bit PAE layout; 32-bit entries use the low word).
pub mod entry {
    /// Present.
    pub const P: u64 = 1;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User accessible.
    pub const US: u64 = 1 << 2;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty.
    pub const D: u64 = 1 << 6;
    /// Page size: a large page (in a directory entry).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// No-execute (PAE with EFER.NXE).
    pub const NX: u64 = 1 << 63;
}
use entry::*;

/// Page-fault error code bits (guest view).
pub mod pf {
    /// The fault was a protection violation (page present).
    pub const P: u32 = 1;
    /// Write access.
    pub const W: u32 = 2;
    /// User-mode access.
    pub const U: u32 = 4;
    /// Reserved bit set in a paging entry.
    pub const RSVD: u32 = 8;
    /// Instruction fetch (with NX enabled).
    pub const ID: u32 = 16;
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address of the 4 KiB page.
    pub phys_page: u64,
    /// The guest allows user writes (R/W at every level).
    pub writable: bool,
    /// The D bit of the final entry is set (after this walk's update).
    pub dirty: bool,
    /// Execution is allowed (no NX at any level, or NX disabled).
    pub executable: bool,
    /// The final entry is global (G with CR4.PGE).
    pub global: bool,
    /// The size of the guest page the translation came from.
    pub size: PageSize,
}

/// The size of a guest page. An INVLPG anywhere in a large page drops its whole translation,
/// so whoever caches 4 KiB pieces of one must know which large page each came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// A 4 KiB page (or paging off).
    Size4K,
    /// A PAE 2 MiB page.
    Size2M,
    /// A 32-bit-paging 4 MiB page (CR4.PSE).
    Size4M,
}

impl PageSize {
    /// The number of 4 KiB pages in a page of this size.
    pub const fn pages(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 512,
            PageSize::Size4M => 1024,
        }
    }
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A guest-visible page fault with this error code.
    Fault(u32),
    /// A paging structure lies outside guest RAM: the emulator must do this walk.
    TableNotInRam,
}

const MAX_RETRIES: usize = 64;

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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Mem(RefCell<Vec<u8>>);
    impl Mem {
        fn new(size: usize) -> Self {
            Mem(RefCell::new(vec![0; size]))
        }
        fn w32(&self, pa: u64, v: u32) {
            self.0.borrow_mut()[pa as usize..pa as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn w64(&self, pa: u64, v: u64) {
            self.0.borrow_mut()[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    impl PhysMemory for Mem {
        fn read_u32(&self, pa: u64) -> Option<u32> {
            let m = self.0.borrow();
            let s = m.get(pa as usize..pa as usize + 4)?;
            Some(u32::from_le_bytes(s.try_into().ok()?))
        }
        fn read_u64(&self, pa: u64) -> Option<u64> {
            let m = self.0.borrow();
            let s = m.get(pa as usize..pa as usize + 8)?;
            Some(u64::from_le_bytes(s.try_into().ok()?))
        }
        fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
            let cur = self.read_u32(pa)?;
            if cur != old {
                return Some(false);
            }
            self.w32(pa, new);
            Some(true)
        }
        fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
            let cur = self.read_u64(pa)?;
            if cur != old {
                return Some(false);
            }
            self.w64(pa, new);
            Some(true)
        }
    }

    const PG: u32 = 0x8000_0011;

    #[test]
    fn two_level_sets_a_and_d() {
        let m = Mem::new(1 << 20);
        m.w32(0x1004, 0x2000 | 7); // PDE for 4 MiB..8 MiB
        m.w32(0x2000 + 4 * 5, 0x9000 | 7); // PTE for 0x405000
        let regs = PagingRegs {
            cr0: PG,
            cr3: 0x1000,
            cr4: 0,
            efer: 0,
        };
        let t = walk(&m, &regs, 0x0040_5123, Access::Read, true).unwrap();
        assert_eq!(t.phys_page, 0x9000);
        assert!(t.writable && !t.dirty && t.executable && !t.global);
        assert_eq!(m.read_u32(0x1004).unwrap(), 0x2000 | 7 | 0x20);
        assert_eq!(m.read_u32(0x2014).unwrap(), 0x9000 | 7 | 0x20);
        let t = walk(&m, &regs, 0x0040_5123, Access::Write, true).unwrap();
        assert!(t.dirty);
        assert_eq!(m.read_u32(0x2014).unwrap(), 0x9000 | 7 | 0x60);
        // Without update_ad nothing changes.
        m.w32(0x2014, 0x9000 | 7);
        walk(&m, &regs, 0x0040_5000, Access::Write, false).unwrap();
        assert_eq!(m.read_u32(0x2014).unwrap(), 0x9000 | 7);
    }

    #[test]
    fn two_level_faults() {
        let m = Mem::new(1 << 20);
        let regs = PagingRegs {
            cr0: PG,
            cr3: 0x1000,
            cr4: 0,
            efer: 0,
        };
        assert_eq!(
            walk(&m, &regs, 0x1000, Access::Read, true),
            Err(WalkError::Fault(4))
        );
        m.w32(0x1000, 0x2000 | 7);
        m.w32(0x2004, 0x3000 | 5); // read-only user
        assert_eq!(
            walk(&m, &regs, 0x1000, Access::Write, true),
            Err(WalkError::Fault(7))
        );
        m.w32(0x2004, 0x3000 | 3); // supervisor
        assert_eq!(
            walk(&m, &regs, 0x1000, Access::Read, true),
            Err(WalkError::Fault(5))
        );
        assert_eq!(
            m.read_u32(0x2004).unwrap(),
            0x3000 | 3,
            "no A bit on a failed walk"
        );
        let regs = PagingRegs {
            cr3: 0x00f0_0000,
            ..regs
        };
        assert_eq!(
            walk(&m, &regs, 0x1000, Access::Read, true),
            Err(WalkError::TableNotInRam)
        );
    }

    #[test]
    fn pse_4mib_pages() {
        let m = Mem::new(1 << 20);
        m.w32(0x1000 + 4 * 2, 0x0040_0000 | 0x80 | 7 | 0x100);
        let regs = PagingRegs {
            cr0: PG,
            cr3: 0x1000,
            cr4: CR4_PSE | CR4_PGE,
            efer: 0,
        };
        let t = walk(&m, &regs, 0x0080_3456, Access::Write, true).unwrap();
        assert_eq!(t.phys_page, 0x0040_3000);
        assert!(t.global && t.dirty);
        assert_eq!(m.read_u32(0x1008).unwrap() & 0x60, 0x60);
        // Without CR4.PSE the PS bit is ignored: the PDE points to a page table.
        let regs = PagingRegs { cr4: 0, ..regs };
        let t = walk(&m, &regs, 0x0080_3456, Access::Read, false);
        assert_eq!(t, Err(WalkError::TableNotInRam));
    }

    #[test]
    fn pae_walk_2mib_and_nx() {
        let m = Mem::new(1 << 20);
        let regs = PagingRegs {
            cr0: PG,
            cr3: 0x1000,
            cr4: CR4_PAE,
            efer: EFER_NXE,
        };
        m.w64(0x1000, 0x2000 | 1); // PDPTE 0
        m.w64(0x2000 + 8 * 2, 0x0060_0000 | 0x80 | 7 | NX); // 2 MiB NX page at 4 MiB
        m.w64(0x2000 + 8 * 3, 0x3000 | 7); // PT for 6 MiB
        m.w64(0x3008, 0x7000 | 7);
        let t = walk(&m, &regs, 0x0041_2000, Access::Read, true).unwrap();
        assert_eq!(t.phys_page, 0x0061_2000);
        assert!(!t.executable);
        assert_eq!(
            walk(&m, &regs, 0x0041_2000, Access::Fetch, true),
            Err(WalkError::Fault(pf::P | pf::U | pf::ID))
        );
        let t = walk(&m, &regs, 0x0060_1000, Access::Fetch, true).unwrap();
        assert_eq!(t.phys_page, 0x7000);
        assert!(t.executable);
        // NX bit without EFER.NXE is reserved.
        let regs2 = PagingRegs { efer: 0, ..regs };
        assert_eq!(
            walk(&m, &regs2, 0x0041_2000, Access::Read, true),
            Err(WalkError::Fault(pf::P | pf::U | pf::RSVD))
        );
        // A/D in 64-bit entries.
        walk(&m, &regs, 0x0060_1000, Access::Write, true).unwrap();
        assert_eq!(m.read_u64(0x3008).unwrap(), 0x7000 | 7 | 0x60);
    }

    #[test]
    fn paging_off_is_identity() {
        let m = Mem::new(4096);
        let regs = PagingRegs {
            cr0: 0x11,
            ..Default::default()
        };
        let t = walk(&m, &regs, 0x1234_5678, Access::Write, true).unwrap();
        assert_eq!(t.phys_page, 0x1234_5000);
    }
}
