//! 4-level (IA-32e) paging for CPL 3 accesses (SDM vol. 3A, 4.5): 4 KiB, 2 MiB and 1 GiB
//! pages, NX at every level, reserved bits from MAXPHYADDR, canonical addresses. The same
//! A/D rule as the 32-bit walker: set by compare-and-exchange only when the whole walk
//! succeeds, the walk restarting when an entry changed under it.

use crate::entry::{A, D, G, NX, P, PS, RW, US};
use crate::walk::{CR4_PGE, EFER_NXE, MAX_RETRIES};
use crate::{pf, Access, PageSize, PhysMemory, Translation, WalkError};

/// CR4.SMEP: it sets the I/D bit of a fetch's page fault even at CPL 3 (SDM 4.7).
const CR4_SMEP: u64 = 1 << 20;

/// The registers of a 4-level walk: a 64-bit guest's CR3, CR4 and EFER, and the CPU model's
/// MAXPHYADDR. 4-level paging is assumed (CR0.PG, CR4.PAE, EFER.LME): the caller picks this
/// walker for IA-32e mode, and declines guests with CR4.LA57 (5-level paging), which the walker
/// does not look at. Protection keys (CR4.PKE) are not checked either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongRegs {
    /// CR3: bits MAXPHYADDR-1:12 locate the PML4 table. Bits 11:0 (the PCID with CR4.PCIDE,
    /// else PWT/PCD) and the bits above MAXPHYADDR (LAM, the no-flush bit) are ignored.
    pub cr3: u64,
    /// CR4 (PGE for global translations, SMEP for the I/D bit of fetch faults).
    pub cr4: u64,
    /// EFER (NXE).
    pub efer: u64,
    /// The physical-address width (CPUID 8000_0008h EAX[7:0]), taken as 32 to 52: values
    /// outside are clamped to that range.
    pub maxphyaddr: u8,
}

impl LongRegs {
    /// The registers of a guest state, as the walker needs them.
    pub const fn new(cr3: u64, cr4: u64, efer: u64, maxphyaddr: u8) -> Self {
        LongRegs {
            cr3,
            cr4,
            efer,
            maxphyaddr,
        }
    }

    /// MAXPHYADDR as the walker uses it (clamped to 32..=52).
    pub const fn phys_bits(&self) -> u32 {
        let m = self.maxphyaddr as u32;
        if m < 32 {
            32
        } else if m > 52 {
            52
        } else {
            m
        }
    }

    /// The address bits of an entry or of CR3: MAXPHYADDR-1:12.
    fn addr_mask(&self) -> u64 {
        (1u64 << self.phys_bits()) - 0x1000
    }
}

/// Whether `linear` is canonical for 4-level paging: bits 63:47 all equal.
pub const fn is_canonical(linear: u64) -> bool {
    (((linear as i64) << 16) >> 16) as u64 == linear
}

/// Translates `linear` for a CPL 3 `access` through 4-level page tables: [`crate::walk`]'s
/// contract (A/D updates with `update_ad`, only when the walk succeeds; a fault after endless
/// contention), plus [`WalkError::NonCanonical`] for a non-canonical address and
/// [`PageSize::Size1G`] pages. User access needs U/S at every level, a write R/W at every
/// level (CR0.WP, SMEP and SMAP concern supervisor accesses only); with EFER.NXE a fetch needs
/// XD clear at every level. A reserved bit set in a present entry (bits 51:MAXPHYADDR; PS in a
/// PML4E; XD without EFER.NXE; bits 29:13 of a 1 GiB and 20:13 of a 2 MiB page entry) is a
/// fault with RSVD, as soon as the walk meets the entry.
pub fn walk64(
    mem: &dyn PhysMemory,
    regs: &LongRegs,
    linear: u64,
    access: Access,
    update_ad: bool,
) -> Result<Translation, WalkError> {
    if !is_canonical(linear) {
        return Err(WalkError::NonCanonical);
    }
    for _ in 0..MAX_RETRIES {
        if let Some(r) = try_walk(mem, regs, linear, access, update_ad) {
            return r;
        }
    }
    // An entry kept changing under us; report a fault and let the emulator decide.
    Err(WalkError::Fault(fault_code(regs, access, false, false)))
}

fn fault_code(regs: &LongRegs, access: Access, present: bool, rsvd: bool) -> u32 {
    let mut e = pf::U;
    if present || rsvd {
        e |= pf::P;
    }
    if rsvd {
        e |= pf::RSVD;
    }
    if access == Access::Write {
        e |= pf::W;
    }
    if access == Access::Fetch && (regs.efer & EFER_NXE != 0 || regs.cr4 & CR4_SMEP != 0) {
        e |= pf::ID;
    }
    e
}

/// Bits 29:13 of a PDPTE mapping a 1 GiB page, 20:13 of a PDE mapping a 2 MiB page: below the
/// page's address bits and above PAT (bit 12).
const RSVD_1G: u64 = 0x3fff_e000;
const RSVD_2M: u64 = 0x001f_e000;

/// One walk; `None` when an A/D update found its entry changed (the caller walks again).
fn try_walk(
    mem: &dyn PhysMemory,
    regs: &LongRegs,
    linear: u64,
    access: Access,
    update_ad: bool,
) -> Option<Result<Translation, WalkError>> {
    let fault = |present, rsvd| {
        Some(Err(WalkError::Fault(fault_code(
            regs, access, present, rsvd,
        ))))
    };
    let addr = regs.addr_mask();
    let nxe = regs.efer & EFER_NXE != 0;
    // Reserved in every entry: bits 51:MAXPHYADDR (bits 62:52 are ignored in 4-level paging,
    // unlike PAE), and XD when EFER.NXE is clear.
    let rsvd_all = ((1u64 << 52) - (1u64 << regs.phys_bits())) | if nxe { 0 } else { NX };
    let mut used = [(0u64, 0u64); 4];
    let mut table = regs.cr3 & addr;
    // Levels 0..=3: PML4E, PDPTE, PDE, PTE, indexed by linear bits 47:39, 38:30, 29:21, 20:12.
    let mut level = 0;
    let size = loop {
        let pa = table + ((linear >> (39 - 9 * level)) & 0x1ff) * 8;
        let Some(e) = mem.read_u64(pa) else {
            return Some(Err(WalkError::TableNotInRam));
        };
        if e & P == 0 {
            return fault(false, false);
        }
        let (rsvd, size) = match level {
            0 => (rsvd_all | PS, None),
            1 if e & PS != 0 => (rsvd_all | RSVD_1G, Some(PageSize::Size1G)),
            2 if e & PS != 0 => (rsvd_all | RSVD_2M, Some(PageSize::Size2M)),
            3 => (rsvd_all, Some(PageSize::Size4K)),
            _ => (rsvd_all, None),
        };
        if e & rsvd != 0 {
            return fault(true, true);
        }
        used[level] = (pa, e);
        level += 1;
        if let Some(size) = size {
            break size;
        }
        table = e & addr;
    };
    let used = &used[..level];
    let user = used.iter().all(|&(_, e)| e & US != 0);
    let writable = used.iter().all(|&(_, e)| e & RW != 0);
    let nx = nxe && used.iter().any(|&(_, e)| e & NX != 0);
    let denied = !user || (access == Access::Write && !writable) || (access == Access::Fetch && nx);
    if denied {
        return fault(true, false);
    }
    let (_, last) = used[level - 1];
    let mut dirty = last & D != 0;
    if update_ad {
        for (i, &(pa, e)) in used.iter().enumerate() {
            let bits = if i == level - 1 && access == Access::Write {
                A | D
            } else {
                A
            };
            if e & bits == bits {
                continue;
            }
            match mem.cmpxchg_u64(pa, e, e | bits) {
                None => return Some(Err(WalkError::TableNotInRam)),
                Some(false) => return None,
                Some(true) => {}
            }
        }
        dirty |= access == Access::Write;
    }
    // The page's frame: the entry's address bits above the page size, the linear address's
    // below it (PAT, bit 12 of a large-page entry, is no address bit).
    let page_bytes = u64::from(size.pages()) << 12;
    let frame = last & addr & !(page_bytes - 1);
    Some(Ok(Translation {
        phys_page: frame | (linear & (page_bytes - 1) & !0xfff),
        writable,
        dirty,
        executable: !nx,
        global: last & G != 0 && regs.cr4 & u64::from(CR4_PGE) != 0,
        size,
        accessed: update_ad || used.iter().all(|&(_, e)| e & A != 0),
    }))
}
