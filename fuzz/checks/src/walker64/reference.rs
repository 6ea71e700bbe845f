//! The reference 4-level walker: a plain transcription of the SDM's 4-level paging (vol. 3A,
//! 4.5: tables 4-14 to 4-20 for the entry formats; 4.6 for CPL 3 access rights; 4.7 for the
//! error code; 4.8 for A/D), written independently of the walker under test: level by level,
//! the address of each entry by concatenation, each table's own reserved bits.

use super::{phys_bits, A, CR4_PGE, CR4_SMEP, D, EFER_NXE, G, P, PS, RW, US};
use crate::walker::{read_n, AdWrite, RefWalk};
use guest_paging::{pf, LongRegs, PageSize, Translation, WalkError};
use host_driver::Access;

/// Bits `hi`..=`lo` of `v`, in place.
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    let width = hi - lo + 1;
    let mask = if width == 64 {
        u64::MAX
    } else {
        ((1u64 << width) - 1) << lo
    };
    v & mask
}

/// What the walk saw of one entry.
struct Seen {
    pa: u64,
    e: u64,
}

fn result(r: Result<Translation, WalkError>) -> RefWalk {
    RefWalk {
        result: r,
        writes: vec![],
    }
}

/// The error code of a #PF for a CPL 3 `access` (SDM 4.7). P is set for a protection
/// violation or a reserved bit, clear for a not-present entry; I/D for a fetch when SMEP is on
/// or (4-level paging having CR4.PAE) EFER.NXE is.
fn page_fault(regs: &LongRegs, access: Access, p: bool, rsvd: bool) -> RefWalk {
    let mut code = pf::U;
    if p {
        code |= pf::P;
    }
    if access == Access::Write {
        code |= pf::W;
    }
    if rsvd {
        code |= pf::RSVD;
    }
    if access == Access::Fetch && (regs.cr4 & CR4_SMEP != 0 || regs.efer & EFER_NXE != 0) {
        code |= pf::ID;
    }
    result(Err(WalkError::Fault(code)))
}

/// The reference translation of `linear` for a CPL 3 `access` under 4-level paging; entries
/// are read from `mem` and nothing is written (the A/D updates of a successful walk with
/// `update_ad` are returned).
pub fn reference_walk64(
    mem: &[u8],
    regs: &LongRegs,
    linear: u64,
    access: Access,
    update_ad: bool,
) -> RefWalk {
    // 4.5.1: 48-bit linear addresses; bits 63:48 must repeat bit 47 (else #GP, 3.3.7.1).
    let upper = linear >> 47;
    if upper != 0 && upper != 0x1_ffff {
        return result(Err(WalkError::NonCanonical));
    }
    let m = phys_bits(regs);
    let nxe = regs.efer & EFER_NXE != 0;
    // Reserved in every present entry: bits 51:M (none when M is 52), and XD without NXE.
    let reserved_common = |e: u64| (m < 52 && bits(e, 51, m) != 0) || (!nxe && e >> 63 == 1);
    let read = |pa: u64| read_n::<8>(mem, pa).map(u64::from_le_bytes);
    let not_in_ram = || result(Err(WalkError::TableNotInRam));

    // PML4E: address bits M-1:12 of CR3, bits 47:39 of the linear address, 0 0 0.
    let pml4e_pa = bits(regs.cr3, m - 1, 12) | (bits(linear, 47, 39) >> 36);
    let Some(pml4e) = read(pml4e_pa) else {
        return not_in_ram();
    };
    if pml4e & P == 0 {
        return page_fault(regs, access, false, false);
    }
    // Table 4-15: bit 7 (PS) is reserved.
    if reserved_common(pml4e) || pml4e & PS != 0 {
        return page_fault(regs, access, true, true);
    }
    let mut seen = vec![Seen {
        pa: pml4e_pa,
        e: pml4e,
    }];

    // PDPTE: bits M-1:12 of the PML4E, bits 38:30 of the linear address.
    let pdpte_pa = bits(pml4e, m - 1, 12) | (bits(linear, 38, 30) >> 27);
    let Some(pdpte) = read(pdpte_pa) else {
        return not_in_ram();
    };
    if pdpte & P == 0 {
        return page_fault(regs, access, false, false);
    }
    seen.push(Seen {
        pa: pdpte_pa,
        e: pdpte,
    });
    if pdpte & PS != 0 {
        // Table 4-16: a 1 GiB page; bits 29:13 reserved, bit 12 PAT.
        if reserved_common(pdpte) || bits(pdpte, 29, 13) != 0 {
            return page_fault(regs, access, true, true);
        }
        let page = bits(pdpte, m - 1, 30) | bits(linear, 29, 12);
        return permit(regs, access, update_ad, &seen, page, PageSize::Size1G);
    }
    // Table 4-17: a PDPTE that references a page directory.
    if reserved_common(pdpte) {
        return page_fault(regs, access, true, true);
    }

    // PDE: bits M-1:12 of the PDPTE, bits 29:21 of the linear address.
    let pde_pa = bits(pdpte, m - 1, 12) | (bits(linear, 29, 21) >> 18);
    let Some(pde) = read(pde_pa) else {
        return not_in_ram();
    };
    if pde & P == 0 {
        return page_fault(regs, access, false, false);
    }
    seen.push(Seen { pa: pde_pa, e: pde });
    if pde & PS != 0 {
        // Table 4-18: a 2 MiB page; bits 20:13 reserved, bit 12 PAT.
        if reserved_common(pde) || bits(pde, 20, 13) != 0 {
            return page_fault(regs, access, true, true);
        }
        let page = bits(pde, m - 1, 21) | bits(linear, 20, 12);
        return permit(regs, access, update_ad, &seen, page, PageSize::Size2M);
    }
    // Table 4-19: a PDE that references a page table.
    if reserved_common(pde) {
        return page_fault(regs, access, true, true);
    }

    // PTE (table 4-20): bits M-1:12 of the PDE, bits 20:12 of the linear address.
    let pte_pa = bits(pde, m - 1, 12) | (bits(linear, 20, 12) >> 9);
    let Some(pte) = read(pte_pa) else {
        return not_in_ram();
    };
    if pte & P == 0 {
        return page_fault(regs, access, false, false);
    }
    if reserved_common(pte) {
        return page_fault(regs, access, true, true);
    }
    seen.push(Seen { pa: pte_pa, e: pte });
    let page = bits(pte, m - 1, 12);
    permit(regs, access, update_ad, &seen, page, PageSize::Size4K)
}

/// 4.6 for a user-mode access, then 4.8: A in every entry used, D in the one that maps the page
/// on a write.
fn permit(
    regs: &LongRegs,
    access: Access,
    update_ad: bool,
    seen: &[Seen],
    page: u64,
    size: PageSize,
) -> RefWalk {
    let user = seen.iter().all(|s| s.e & US != 0);
    let writable = seen.iter().all(|s| s.e & RW != 0);
    let no_exec = regs.efer & EFER_NXE != 0 && seen.iter().any(|s| s.e >> 63 == 1);
    let allowed = user
        && match access {
            Access::Read => true,
            Access::Write => writable,
            Access::Fetch => !no_exec,
        };
    if !allowed {
        return page_fault(regs, access, true, false);
    }
    let leaf = seen.last().expect("a page entry").e;
    let mut writes = vec![];
    if update_ad {
        for (i, s) in seen.iter().enumerate() {
            let is_leaf = i + 1 == seen.len();
            let mut missing = A & !s.e;
            if is_leaf && access == Access::Write {
                missing |= D & !s.e;
            }
            if missing != 0 {
                writes.push(AdWrite {
                    pa: s.pa,
                    wide: true,
                    bits: missing,
                });
            }
        }
    }
    RefWalk {
        result: Ok(Translation {
            phys_page: page,
            writable,
            dirty: leaf & D != 0 || (update_ad && access == Access::Write),
            executable: !no_exec,
            global: leaf & G != 0 && regs.cr4 & CR4_PGE != 0,
            size,
            accessed: update_ad || seen.iter().all(|s| s.e & A != 0),
        }),
        writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walker::{write_n, RAM_SIZE};

    fn w64(mem: &mut [u8], pa: u64, v: u64) {
        write_n(mem, pa, &v.to_le_bytes());
    }

    #[test]
    fn reference_walks_known_tables() {
        // linear: PML4 index 1, PDPT 2, PD 3, PT 4; tables at 0x1000..0x4000, page 0x7000.
        let lin = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x56;
        let mut mem = vec![0u8; RAM_SIZE];
        w64(&mut mem, 0x1008, 0x2000 | 7);
        w64(&mut mem, 0x2010, 0x3000 | 7);
        w64(&mut mem, 0x3018, 0x4000 | 7);
        w64(&mut mem, 0x4020, 0x7000 | 7);
        let regs = LongRegs::new(0x1abc, 0, EFER_NXE, 40);
        let r = reference_walk64(&mem, &regs, lin, Access::Write, true);
        let t = r.result.unwrap();
        assert_eq!((t.phys_page, t.size), (0x7000, PageSize::Size4K));
        assert_eq!(r.writes.len(), 4);
        assert_eq!(r.writes[3].bits, A | D);
        // A 1 GiB page, and one with a reserved bit (13).
        w64(&mut mem, 0x2010, 0x4000_0000 | PS | 7);
        let t = reference_walk64(&mem, &regs, lin, Access::Read, false)
            .result
            .unwrap();
        assert_eq!(t.phys_page, 0x4000_0000 | (3 << 21) | (4 << 12));
        assert_eq!(t.size, PageSize::Size1G);
        w64(&mut mem, 0x2010, 0x4000_0000 | 1 << 13 | PS | 7);
        let r = reference_walk64(&mem, &regs, lin, Access::Fetch, true);
        assert_eq!(
            r.result,
            Err(WalkError::Fault(pf::P | pf::U | pf::RSVD | pf::ID))
        );
        assert!(r.writes.is_empty());
        // Not canonical.
        let r = reference_walk64(&mem, &regs, lin | 1 << 47, Access::Read, false);
        assert_eq!(r.result, Err(WalkError::NonCanonical));
    }
}
