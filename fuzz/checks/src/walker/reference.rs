//! The reference walker: a plain transcription of the SDM's 32-bit and PAE paging for CPL 3
//! accesses, written independently of the walker under test.

use super::{pae_mode, read32, read64, write_n};
use super::{A, CR0_PG, CR4_PGE, CR4_PSE, D, EFER_NXE, G, NX, P, PAE_ADDR, PS, RW, US};
use guest_paging::{pf, PageSize, PagingRegs, Translation, WalkError};
use host_driver::Access;

/// An A/D update the reference walk makes: OR `bits` into the entry at `pa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdWrite {
    /// Physical address of the entry.
    pub pa: u64,
    /// A 64-bit (PAE) entry rather than a 32-bit one.
    pub wide: bool,
    /// Bits to set (only those not set yet).
    pub bits: u64,
}

/// What the reference walk decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefWalk {
    /// The translation or the fault.
    pub result: Result<Translation, WalkError>,
    /// The A/D updates of a successful walk with `update_ad`.
    pub writes: Vec<AdWrite>,
}

impl RefWalk {
    /// Applies the A/D updates to `mem`.
    pub fn apply(&self, mem: &mut [u8]) {
        for w in &self.writes {
            if w.wide {
                let v = read64(mem, w.pa).expect("entry in RAM") | w.bits;
                write_n(mem, w.pa, &v.to_le_bytes());
            } else {
                let v = read32(mem, w.pa).expect("entry in RAM") | w.bits as u32;
                write_n(mem, w.pa, &v.to_le_bytes());
            }
        }
    }
}

/// The guest-visible #PF error code of a CPL 3 access (I/D only with PAE and EFER.NXE).
fn fault(regs: &PagingRegs, access: Access, present: bool, reserved: bool) -> RefWalk {
    let mut code = pf::U;
    if present || reserved {
        code |= pf::P;
    }
    if reserved {
        code |= pf::RSVD;
    }
    if access == Access::Write {
        code |= pf::W;
    }
    if access == Access::Fetch && pae_mode(regs) && regs.efer & EFER_NXE != 0 {
        code |= pf::ID;
    }
    RefWalk {
        result: Err(WalkError::Fault(code)),
        writes: vec![],
    }
}

fn not_in_ram() -> RefWalk {
    RefWalk {
        result: Err(WalkError::TableNotInRam),
        writes: vec![],
    }
}

/// The final step shared by every mode: permission check, A/D updates, the translation.
/// `levels` are (physical address, value) of the entries used, the last one the final entry;
/// a walk that ends at the first level maps a large page (2 MiB with `wide` PAE entries, else
/// 4 MiB).
#[allow(clippy::too_many_arguments)]
fn finish(
    regs: &PagingRegs,
    access: Access,
    update_ad: bool,
    levels: &[(u64, u64)],
    wide: bool,
    nx: bool,
    phys_page: u64,
) -> RefWalk {
    let user = levels.iter().all(|&(_, e)| e & US != 0);
    let writable = levels.iter().all(|&(_, e)| e & RW != 0);
    let denied = !user || (access == Access::Write && !writable) || (access == Access::Fetch && nx);
    if denied {
        return fault(regs, access, true, false);
    }
    let (_, last) = *levels.last().expect("at least one level");
    let mut writes = vec![];
    if update_ad {
        for (i, &(pa, e)) in levels.iter().enumerate() {
            let mut want = A;
            if i == levels.len() - 1 && access == Access::Write {
                want |= D;
            }
            if e & want != want {
                writes.push(AdWrite {
                    pa,
                    wide,
                    bits: want & !e,
                });
            }
        }
    }
    RefWalk {
        result: Ok(Translation {
            phys_page,
            writable,
            dirty: last & D != 0 || (update_ad && access == Access::Write),
            executable: !nx,
            global: last & G != 0 && regs.cr4 & CR4_PGE != 0,
            size: match (levels.len(), wide) {
                (1, true) => PageSize::Size2M,
                (1, false) => PageSize::Size4M,
                _ => PageSize::Size4K,
            },
            accessed: update_ad || levels.iter().all(|&(_, e)| e & A != 0),
        }),
        writes,
    }
}

/// The reference translation of `linear` for a CPL 3 `access`: 32-bit paging (4 KiB pages,
/// 4 MiB pages with CR4.PSE and PSE-36 address bits) or PAE paging (4 KiB and 2 MiB pages,
/// NX with EFER.NXE); entries are read from `mem` and nothing is written (the A/D updates are
/// returned).
pub fn reference_walk(
    mem: &[u8],
    regs: &PagingRegs,
    linear: u32,
    access: Access,
    update_ad: bool,
) -> RefWalk {
    let lin = u64::from(linear);
    if regs.cr0 & CR0_PG == 0 {
        return RefWalk {
            result: Ok(Translation {
                phys_page: lin & !0xfff,
                writable: true,
                dirty: true,
                executable: true,
                global: false,
                size: PageSize::Size4K,
                accessed: true,
            }),
            writes: vec![],
        };
    }
    if !pae_mode(regs) {
        let pde_pa = u64::from(regs.cr3 & !0xfff) + (lin >> 22) * 4;
        let Some(pde) = read32(mem, pde_pa).map(u64::from) else {
            return not_in_ram();
        };
        if pde & P == 0 {
            return fault(regs, access, false, false);
        }
        if pde & PS != 0 && regs.cr4 & CR4_PSE != 0 {
            // A 4 MiB page: bits 13..20 are physical address bits 32..39, bit 21 is reserved.
            if pde & (1 << 21) != 0 {
                return fault(regs, access, true, true);
            }
            let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
            let page = base | (lin & 0x003f_f000);
            return finish(
                regs,
                access,
                update_ad,
                &[(pde_pa, pde)],
                false,
                false,
                page,
            );
        }
        let pte_pa = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
        let Some(pte) = read32(mem, pte_pa).map(u64::from) else {
            return not_in_ram();
        };
        if pte & P == 0 {
            return fault(regs, access, false, false);
        }
        let levels = [(pde_pa, pde), (pte_pa, pte)];
        return finish(
            regs,
            access,
            update_ad,
            &levels,
            false,
            false,
            pte & 0xffff_f000,
        );
    }
    let nxe = regs.efer & EFER_NXE != 0;
    // Bits 52..62 are reserved in every PAE entry, bit 63 too without EFER.NXE.
    let reserved_high = |e: u64| e & 0x7ff0_0000_0000_0000 != 0 || (!nxe && e & NX != 0);
    let pdpte_pa = u64::from(regs.cr3 & !0x1f) + (lin >> 30) * 8;
    let Some(pdpte) = read64(mem, pdpte_pa) else {
        return not_in_ram();
    };
    if pdpte & P == 0 {
        return fault(regs, access, false, false);
    }
    // PDPTE: bits 1, 2, 5..8 and 52..63 are reserved (no R/W, U/S, A, NX at this level).
    if pdpte & 0x1e6 != 0 || pdpte >> 52 != 0 {
        return fault(regs, access, true, true);
    }
    let pde_pa = (pdpte & PAE_ADDR) + ((lin >> 21) & 0x1ff) * 8;
    let Some(pde) = read64(mem, pde_pa) else {
        return not_in_ram();
    };
    if pde & P == 0 {
        return fault(regs, access, false, false);
    }
    if reserved_high(pde) {
        return fault(regs, access, true, true);
    }
    if pde & PS != 0 {
        // A 2 MiB page: bits 13..20 are reserved.
        if pde & 0x001f_e000 != 0 {
            return fault(regs, access, true, true);
        }
        let page = (pde & 0x000f_ffff_ffe0_0000) | (lin & 0x001f_f000);
        let nx = nxe && pde & NX != 0;
        return finish(regs, access, update_ad, &[(pde_pa, pde)], true, nx, page);
    }
    let pte_pa = (pde & PAE_ADDR) + ((lin >> 12) & 0x1ff) * 8;
    let Some(pte) = read64(mem, pte_pa) else {
        return not_in_ram();
    };
    if pte & P == 0 {
        return fault(regs, access, false, false);
    }
    if reserved_high(pte) {
        return fault(regs, access, true, true);
    }
    let nx = nxe && (pde | pte) & NX != 0;
    let levels = [(pde_pa, pde), (pte_pa, pte)];
    finish(regs, access, update_ad, &levels, true, nx, pte & PAE_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walker::{regs_from_mode, RAM_SIZE};

    fn w32(mem: &mut [u8], pa: u64, v: u32) {
        write_n(mem, pa, &v.to_le_bytes());
    }

    #[test]
    fn reference_walks_known_tables() {
        // 2-level: PDE 1 -> table at 0x2000, PTE 5 -> page 0x5000 (linear 0x405123).
        let mut mem = vec![0u8; RAM_SIZE];
        w32(&mut mem, 0x1004, 0x2000 | 7);
        w32(&mut mem, 0x2014, 0x5000 | 7);
        let regs = regs_from_mode(0x1, 0x1000);
        let r = reference_walk(&mem, &regs, 0x0040_5123, Access::Write, true);
        let t = r.result.unwrap();
        assert_eq!(t.phys_page, 0x5000);
        assert!(t.writable && t.dirty && t.executable && !t.global);
        let mut after = mem.clone();
        r.apply(&mut after);
        assert_eq!(read32(&after, 0x1004), Some(0x2000 | 7 | 0x20));
        assert_eq!(read32(&after, 0x2014), Some(0x5000 | 7 | 0x60));
        // Read-only user page: a write faults with P|W|U and nothing is written.
        w32(&mut mem, 0x2014, 0x5000 | 5);
        let r = reference_walk(&mem, &regs, 0x0040_5123, Access::Write, true);
        assert_eq!(r.result, Err(WalkError::Fault(7)));
        assert!(r.writes.is_empty());
        // PSE 4 MiB page with PSE-36 bits: physical 0x1_0040_0000 + offset.
        w32(&mut mem, 0x1008, 0x0040_0000 | (1 << 13) | 0x80 | 7);
        let regs = regs_from_mode(0x1 | 0x4, 0x1000);
        let t = reference_walk(&mem, &regs, 0x0080_3456, Access::Read, false)
            .result
            .unwrap();
        assert_eq!(t.phys_page, 0x1_0040_3000);
    }

    #[test]
    fn reference_pae_nx_and_reserved_bits() {
        let mut mem = vec![0u8; RAM_SIZE];
        write_n(&mut mem, 0x1000, &(0x2000u64 | 1).to_le_bytes());
        write_n(
            &mut mem,
            0x2010,
            &(0x0060_0000u64 | 0x80 | 7 | NX).to_le_bytes(),
        );
        let regs = regs_from_mode(0x1 | 0x2 | 0x10, 0x1000);
        let fetch = reference_walk(&mem, &regs, 0x0041_2000, Access::Fetch, true);
        assert_eq!(fetch.result, Err(WalkError::Fault(pf::P | pf::U | pf::ID)));
        let read = reference_walk(&mem, &regs, 0x0041_2000, Access::Read, false);
        assert_eq!(read.result.unwrap().phys_page, 0x0061_2000);
        // Without EFER.NXE bit 63 is reserved.
        let regs = regs_from_mode(0x1 | 0x2, 0x1000);
        let r = reference_walk(&mem, &regs, 0x0041_2000, Access::Read, false);
        assert_eq!(r.result, Err(WalkError::Fault(pf::P | pf::U | pf::RSVD)));
        // Tables outside RAM.
        let regs = regs_from_mode(0x1 | 0x2, 0x00f0_0000);
        let r = reference_walk(&mem, &regs, 0, Access::Read, false);
        assert_eq!(r.result, Err(WalkError::TableNotInRam));
    }
}
