use super::*;
use crate::entry::*;
use crate::walk::*;
use std::cell::RefCell;

pub(crate) struct Mem(pub(crate) RefCell<Vec<u8>>);
impl Mem {
    pub(crate) fn new(size: usize) -> Self {
        Mem(RefCell::new(vec![0; size]))
    }
    pub(crate) fn w32(&self, pa: u64, v: u32) {
        self.0.borrow_mut()[pa as usize..pa as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn w64(&self, pa: u64, v: u64) {
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

/// Two linear pages 0x405000 and 0x406000 mapped to physical 0x9000 and 0x7000 (not adjacent),
/// 0x407000 not present; bytes = low byte of the physical address.
fn code_pages() -> (Mem, PagingRegs) {
    let m = Mem::new(1 << 20);
    m.w32(0x1004, 0x2000 | 7);
    m.w32(0x2000 + 4 * 5, 0x9000 | 5);
    m.w32(0x2000 + 4 * 6, 0x7000 | 5);
    for pa in (0x7000..0x8000).chain(0x9000..0xa000) {
        let mut v = m.0.borrow_mut();
        v[pa] = pa as u8;
    }
    (m, PagingRegs::new(PG, 0x1000, 0, 0))
}

fn read_ram(m: &Mem) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
    |pa, buf| {
        let v = m.0.borrow();
        buf.copy_from_slice(&v[pa as usize..pa as usize + buf.len()]);
        true
    }
}

#[test]
fn read_linear_follows_the_tables_across_a_page_boundary() {
    let (m, regs) = code_pages();
    let mut buf = [0u8; 15];
    let n = read_linear(&m, &regs, 0x0040_5ffa, &mut buf, read_ram(&m));
    assert_eq!(n, 15);
    assert_eq!(buf[..6], [0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff]);
    assert_eq!(buf[6..], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    // A fetch sets no Accessed bit.
    assert_eq!(m.read_u32(0x2014).unwrap(), 0x9000 | 5);
}

#[test]
fn read_linear_stops_at_a_missing_page_or_a_refused_read() {
    let (m, regs) = code_pages();
    let mut buf = [0u8; 15];
    assert_eq!(
        read_linear(&m, &regs, 0x0040_6ffc, &mut buf, read_ram(&m)),
        4
    );
    assert_eq!(
        read_linear(&m, &regs, 0x0040_7000, &mut buf, read_ram(&m)),
        0
    );
    let mut inner = read_ram(&m);
    let not_0x7000 = |pa: u64, b: &mut [u8]| pa >> 12 != 7 && inner(pa, b);
    assert_eq!(read_linear(&m, &regs, 0x0040_5ff8, &mut buf, not_0x7000), 8);
}
