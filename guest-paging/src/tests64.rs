//! The 4-level walker ([`walk64`], [`read_linear64`]) on hand-built tables.

use super::*;
use crate::entry::*;
use crate::tests::Mem;
use crate::walk::EFER_NXE;
use std::cell::Cell;

/// PML4 index 2, PDPT index 3, PD index 4, PT index 5, offset 0x123.
const LIN: u64 = (2 << 39) | (3 << 30) | (4 << 21) | (5 << 12) | 0x123;
/// Where each level's entry for [`LIN`] lies: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
const ENTRY: [u64; 4] = [
    0x1000 + 2 * 8,
    0x2000 + 3 * 8,
    0x3000 + 4 * 8,
    0x4000 + 5 * 8,
];
const URW: u64 = P | RW | US;
const CR4_PGE: u64 = 1 << 7;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_SMEP: u64 = 1 << 20;

/// [`LIN`] mapped to the 4 KiB page at 0x9000, user writable at every level.
fn tables() -> (Mem, LongRegs) {
    let m = Mem::new(1 << 20);
    m.w64(ENTRY[0], 0x2000 | URW);
    m.w64(ENTRY[1], 0x3000 | URW);
    m.w64(ENTRY[2], 0x4000 | URW);
    m.w64(ENTRY[3], 0x9000 | URW);
    (m, LongRegs::new(0x1000, 0, EFER_NXE, 40))
}

fn entry(m: &Mem, level: usize) -> u64 {
    m.read_u64(ENTRY[level]).unwrap()
}

fn set(m: &Mem, level: usize, bits: u64) {
    m.w64(ENTRY[level], entry(m, level) | bits);
}

fn clear(m: &Mem, level: usize, bits: u64) {
    m.w64(ENTRY[level], entry(m, level) & !bits);
}

fn fault(code: u32) -> Result<Translation, WalkError> {
    Err(WalkError::Fault(code))
}

#[test]
fn a_4kib_page_sets_a_at_every_level_and_d_in_the_pte() {
    let (m, regs) = tables();
    let t = walk64(&m, &regs, LIN, Access::Read, true).unwrap();
    assert_eq!(t.phys_page, 0x9000);
    assert_eq!(t.size, PageSize::Size4K);
    assert!(t.writable && !t.dirty && t.executable && !t.global);
    for level in 0..4 {
        assert_eq!(entry(&m, level) & (A | D), A, "level {level}");
    }
    let t = walk64(&m, &regs, LIN, Access::Write, true).unwrap();
    assert!(t.dirty);
    assert_eq!(entry(&m, 3), 0x9000 | URW | A | D);
    assert_eq!(entry(&m, 2) & D, 0, "D only in the final entry");
    // Without update_ad nothing is written.
    let (m, regs) = tables();
    let t = walk64(&m, &regs, LIN, Access::Write, false).unwrap();
    assert!(!t.dirty);
    assert!((0..4).all(|l| entry(&m, l) & (A | D) == 0));
}

#[test]
fn a_2mib_page_ends_the_walk_at_the_pde() {
    let (m, mut regs) = tables();
    regs.cr4 = CR4_PGE;
    m.w64(ENTRY[2], 0x0060_0000 | PS | G | URW | (1 << 12)); // bit 12 is PAT, not address
    let t = walk64(&m, &regs, LIN, Access::Write, true).unwrap();
    assert_eq!(t.phys_page, 0x0060_0000 | 5 << 12);
    assert_eq!(t.size, PageSize::Size2M);
    assert!(t.global && t.dirty);
    assert_eq!(entry(&m, 2) & (A | D), A | D);
    assert_eq!(
        entry(&m, 3) & A,
        0,
        "the PTE slot is not an entry of this walk"
    );
    // G counts only with CR4.PGE.
    regs.cr4 = 0;
    assert!(!walk64(&m, &regs, LIN, Access::Read, true).unwrap().global);
}

#[test]
fn a_1gib_page_ends_the_walk_at_the_pdpte() {
    let (m, regs) = tables();
    m.w64(ENTRY[1], 0x00c0_0000_0000 | PS | URW | (1 << 12));
    let t = walk64(&m, &regs, LIN, Access::Write, true).unwrap();
    assert_eq!(t.phys_page, 0x00c0_0000_0000 | 4 << 21 | 5 << 12);
    assert_eq!(t.size, PageSize::Size1G);
    assert_eq!(t.size.pages(), 1 << 18);
    assert!(t.dirty);
    assert_eq!(entry(&m, 0) & (A | D), A);
    assert_eq!(entry(&m, 1) & (A | D), A | D);
    assert_eq!(entry(&m, 2) & A, 0);
}

#[test]
fn a_missing_entry_at_any_level_faults_not_present() {
    for level in 0..4 {
        let (m, regs) = tables();
        // A non-present entry's other bits, reserved ones included, mean nothing.
        clear(&m, level, P);
        set(&m, level, 1 << 51 | PS);
        assert_eq!(
            walk64(&m, &regs, LIN, Access::Write, true),
            fault(pf::U | pf::W),
            "level {level}"
        );
        assert!(
            (0..4).all(|l| entry(&m, l) & A == 0),
            "no A on a failed walk"
        );
    }
}

#[test]
fn user_access_needs_us_and_a_write_rw_at_every_level() {
    for level in 0..4 {
        let (m, regs) = tables();
        clear(&m, level, RW);
        assert_eq!(
            walk64(&m, &regs, LIN, Access::Write, true),
            fault(pf::P | pf::U | pf::W),
            "level {level}"
        );
        let t = walk64(&m, &regs, LIN, Access::Read, false).unwrap();
        assert!(!t.writable, "level {level}");
        let (m, regs) = tables();
        clear(&m, level, US);
        assert_eq!(
            walk64(&m, &regs, LIN, Access::Read, true),
            fault(pf::P | pf::U),
            "level {level}"
        );
        assert!((0..4).all(|l| entry(&m, l) & A == 0));
    }
}

#[test]
fn nx_at_any_level_forbids_fetches_and_is_reserved_without_nxe() {
    for level in 0..4 {
        let (m, regs) = tables();
        set(&m, level, NX);
        assert_eq!(
            walk64(&m, &regs, LIN, Access::Fetch, true),
            fault(pf::P | pf::U | pf::ID),
            "level {level}"
        );
        let t = walk64(&m, &regs, LIN, Access::Read, true).unwrap();
        assert!(!t.executable, "level {level}");
        let no_nxe = LongRegs { efer: 0, ..regs };
        assert_eq!(
            walk64(&m, &no_nxe, LIN, Access::Read, true),
            fault(pf::P | pf::U | pf::RSVD),
            "level {level}"
        );
    }
}

#[test]
fn reserved_bits_fault_with_rsvd() {
    let rsvd = fault(pf::P | pf::U | pf::W | pf::RSVD);
    // PS in a PML4E.
    let (m, regs) = tables();
    set(&m, 0, PS);
    assert_eq!(walk64(&m, &regs, LIN, Access::Write, true), rsvd);
    // Bits 51:MAXPHYADDR at every level; bits 62:52 are ignored.
    for level in 0..4 {
        let (m, regs) = tables();
        set(&m, level, 1 << 40);
        assert_eq!(
            walk64(&m, &regs, LIN, Access::Write, true),
            rsvd,
            "level {level}"
        );
        assert!((0..4).all(|l| entry(&m, l) & A == 0));
        let (m, regs) = tables();
        set(&m, level, 0x7ff0_0000_0000_0000);
        assert!(
            walk64(&m, &regs, LIN, Access::Write, true).is_ok(),
            "level {level}"
        );
    }
    // With MAXPHYADDR 52 bit 40 is an address bit.
    let (m, regs) = tables();
    set(&m, 3, 1 << 40);
    let wide = LongRegs {
        maxphyaddr: 52,
        ..regs
    };
    let t = walk64(&m, &wide, LIN, Access::Read, false).unwrap();
    assert_eq!(t.phys_page, (1 << 40) | 0x9000);
    // Large pages: bits 29:13 of a 1 GiB, 20:13 of a 2 MiB page (bit 12 is PAT).
    for (level, base, bits) in [(1, 0x4000_0000u64, [13, 29]), (2, 0x0020_0000, [13, 20])] {
        for bit in bits {
            let (m, regs) = tables();
            m.w64(ENTRY[level], base | 1 << bit | PS | URW);
            assert_eq!(
                walk64(&m, &regs, LIN, Access::Write, true),
                rsvd,
                "level {level} bit {bit}"
            );
        }
    }
}

#[test]
fn non_canonical_addresses_are_not_walked() {
    assert!(is_canonical(0x0000_7fff_ffff_ffff) && is_canonical(0xffff_8000_0000_0000));
    assert!(!is_canonical(0x0000_8000_0000_0000) && !is_canonical(0xffff_7fff_ffff_ffff));
    assert!(!is_canonical(0x0001_0000_0000_0000) && !is_canonical(1 << 63));
    let (m, regs) = tables();
    for lin in [LIN | 1 << 47, LIN | 1 << 63, LIN | 1 << 50] {
        assert_eq!(
            walk64(&m, &regs, lin, Access::Read, true),
            Err(WalkError::NonCanonical),
            "{lin:#x}"
        );
    }
    // A high canonical address uses PML4 entry 256 and up.
    let high = 0xffff_8000_0000_0000 | (LIN & 0x7f_ffff_ffff);
    assert_eq!(walk64(&m, &regs, high, Access::Read, true), fault(pf::U));
    m.w64(0x1000 + 256 * 8, 0x2000 | URW);
    assert_eq!(
        walk64(&m, &regs, high, Access::Read, true)
            .unwrap()
            .phys_page,
        0x9000
    );
}

#[test]
fn cr3_bits_outside_the_table_address_are_ignored() {
    let (m, regs) = tables();
    let want = walk64(&m, &regs, LIN, Access::Read, false).unwrap();
    // PCID 0xabc with CR4.PCIDE; PWT/PCD without; bits above MAXPHYADDR (40): 45, LAM (62:61),
    // the no-flush bit (63).
    for (cr3, cr4) in [
        (0x1abc, CR4_PCIDE),
        (0x1018, 0),
        (0x1000 | 1 << 45 | 3 << 61 | 1 << 63, CR4_PCIDE),
    ] {
        let r = LongRegs { cr3, cr4, ..regs };
        assert_eq!(walk64(&m, &r, LIN, Access::Read, false), Ok(want));
    }
}

#[test]
fn maxphyaddr_is_clamped_to_32_through_52() {
    let r = |maxphyaddr| LongRegs {
        maxphyaddr,
        ..Default::default()
    };
    assert_eq!(r(0).phys_bits(), 32);
    assert_eq!(r(36).phys_bits(), 36);
    assert_eq!(r(200).phys_bits(), 52);
    let (m, regs) = tables();
    set(&m, 3, 1 << 32);
    let narrow = LongRegs {
        maxphyaddr: 0,
        ..regs
    };
    assert_eq!(
        walk64(&m, &narrow, LIN, Access::Read, false),
        fault(pf::P | pf::U | pf::RSVD)
    );
}

#[test]
fn a_fetch_fault_has_id_with_nxe_or_smep() {
    let (m, regs) = tables();
    clear(&m, 3, P);
    let code = |efer, cr4| {
        walk64(
            &m,
            &LongRegs { efer, cr4, ..regs },
            LIN,
            Access::Fetch,
            true,
        )
    };
    assert_eq!(code(EFER_NXE, 0), fault(pf::U | pf::ID));
    assert_eq!(code(0, CR4_SMEP), fault(pf::U | pf::ID));
    assert_eq!(code(0, 0), fault(pf::U));
}

#[test]
fn a_table_outside_ram_is_for_the_emulator() {
    let (m, regs) = tables();
    m.w64(ENTRY[2], 0x0010_0000 | URW); // the PT just past the 1 MiB of RAM
    assert_eq!(
        walk64(&m, &regs, LIN, Access::Read, true),
        Err(WalkError::TableNotInRam)
    );
    assert_eq!(entry(&m, 0) & A, 0);
}

/// `Mem` whose compare-and-exchange fails `failures` times (`u32::MAX`: always), as if
/// another CPU changed the entry each time.
struct Contended<'a> {
    mem: &'a Mem,
    failures: Cell<u32>,
}

impl PhysMemory for Contended<'_> {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        self.mem.read_u32(pa)
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        self.mem.read_u64(pa)
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        self.mem.cmpxchg_u32(pa, old, new)
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        match self.failures.get() {
            0 => self.mem.cmpxchg_u64(pa, old, new),
            n => {
                self.failures
                    .set(n.saturating_sub(u32::from(n != u32::MAX)));
                Some(false)
            }
        }
    }
}

#[test]
fn contention_retries_the_walk_and_endless_contention_faults() {
    let (m, regs) = tables();
    let c = Contended {
        mem: &m,
        failures: Cell::new(5),
    };
    let t = walk64(&c, &regs, LIN, Access::Write, true).unwrap();
    assert_eq!(t.phys_page, 0x9000);
    assert_eq!(entry(&m, 3), 0x9000 | URW | A | D);
    let (m, regs) = tables();
    let c = Contended {
        mem: &m,
        failures: Cell::new(u32::MAX),
    };
    assert_eq!(
        walk64(&c, &regs, LIN, Access::Write, true),
        fault(pf::U | pf::W)
    );
    assert!((0..4).all(|l| entry(&m, l) & A == 0));
}

/// Maps the 4 KiB page at linear `lin` to `page`, user writable, building tables at `*next`.
fn map(m: &Mem, cr3: u64, lin: u64, page: u64, next: &mut u64) {
    let mut table = cr3;
    for level in 0..3 {
        let pa = table + ((lin >> (39 - 9 * level)) & 0x1ff) * 8;
        let e = m.read_u64(pa).unwrap();
        table = if e & P != 0 {
            e & !0xfff
        } else {
            *next += 0x1000;
            m.w64(pa, *next | URW);
            *next
        };
    }
    m.w64(table + ((lin >> 12) & 0x1ff) * 8, page | URW);
}

fn read_ram(m: &Mem) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
    |pa, buf| {
        let v = m.0.borrow();
        buf.copy_from_slice(&v[pa as usize..pa as usize + buf.len()]);
        true
    }
}

#[test]
fn read_linear64_crosses_pages_and_stops_at_the_canonical_edge() {
    let m = Mem::new(1 << 20);
    let regs = LongRegs::new(0x1000, 0, EFER_NXE, 40);
    let mut next = 0x1000;
    let top = 0x0000_7fff_ffff_f000;
    map(&m, 0x1000, top - 0x1000, 0x9000, &mut next);
    map(&m, 0x1000, top, 0x7000, &mut next);
    for pa in (0x7000..0x8000).chain(0x9000..0xa000) {
        m.0.borrow_mut()[pa] = pa as u8;
    }
    let mut buf = [0u8; 8];
    assert_eq!(read_linear64(&m, &regs, top - 4, &mut buf, read_ram(&m)), 8);
    assert_eq!(buf, [0xfc, 0xfd, 0xfe, 0xff, 0, 1, 2, 3]);
    // The last canonical bytes below 2^47, then a non-canonical address.
    assert_eq!(
        read_linear64(&m, &regs, top + 0xffc, &mut buf, read_ram(&m)),
        4
    );
    assert_eq!(buf[..4], [0xfc, 0xfd, 0xfe, 0xff]);
    assert_eq!(read_linear64(&m, &regs, 1 << 47, &mut buf, read_ram(&m)), 0);
    // A fetch sets no Accessed bit.
    assert_eq!(m.read_u64(0x1000 + 255 * 8).unwrap() & A, 0);
}
