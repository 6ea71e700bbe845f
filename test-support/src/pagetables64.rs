//! Synthetic 4-level page tables in guest RAM (long mode, NX on), CR3 at 0x1000 and further
//! tables allocated upwards from 0x2000 (below 1 MiB), with 4 KiB, 2 MiB and 1 GiB pages: the
//! fixture behind [`crate::vm64::Vm64`], 64-bit linear addresses throughout.

use crate::pagetables::bits::*;
use host_driver::GuestRam;

/// CR0 (PG, WP, NE, ET, MP, PE), CR4 (PAE, PGE) and EFER (LME, LMA, NXE) of a long-mode guest.
pub const CR0: u64 = 0x8001_0033;
/// CR4: PAE and PGE.
pub const CR4: u64 = 0x20 | 0x80;
/// EFER: LME, LMA, NXE.
pub const EFER: u64 = (1 << 8) | (1 << 10) | (1 << 11);
/// The page tables' root.
pub const CR3: u64 = 0x1000;
const TABLES_END: u64 = 0x0010_0000;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// The tables' next free page; the tables themselves live in guest RAM.
#[derive(Debug)]
pub struct LongTables {
    next_table: u64,
}

/// The level an entry maps at: its index shift.
const PML4: u32 = 39;
const PDPT: u32 = 30;
const PD: u32 = 21;
const PT: u32 = 12;

impl LongTables {
    /// An empty PML4 at [`CR3`].
    pub fn new(ram: &GuestRam) -> LongTables {
        ram.write(CR3, &[0; 4096]);
        LongTables {
            next_table: CR3 + 0x1000,
        }
    }

    fn alloc_table(&mut self, ram: &GuestRam) -> u64 {
        let t = self.next_table;
        self.next_table += 4096;
        assert!(self.next_table <= TABLES_END, "page-table area exhausted");
        ram.write(t, &[0; 4096]);
        t
    }

    /// Physical address of the entry for `lin` at the level of `shift`, creating the tables
    /// above it (user, writable, executable) as needed.
    fn entry_addr(&mut self, ram: &GuestRam, lin: u64, shift: u32) -> u64 {
        let mut table = CR3;
        for level in [PML4, PDPT, PD, PT] {
            let at = table + ((lin >> level) & 0x1ff) * 8;
            if level == shift {
                return at;
            }
            let mut e = ram.read_u64(at);
            if e & P == 0 {
                e = self.alloc_table(ram) | URW;
                ram.write_u64(at, e);
            }
            assert!(e & PS == 0, "{lin:#x}: a large page above level {shift}");
            table = e & ADDR;
        }
        unreachable!("shift {shift}")
    }

    /// Maps the 4 KiB page at `lin` to `phys` with entry flags `flags`.
    pub fn map(&mut self, ram: &GuestRam, lin: u64, phys: u64, flags: u64) {
        let at = self.entry_addr(ram, lin, PT);
        ram.write_u64(at, phys | flags);
    }

    /// Maps the 2 MiB page at `lin` to `phys` (both 2 MiB aligned).
    pub fn map_2m(&mut self, ram: &GuestRam, lin: u64, phys: u64, flags: u64) {
        assert!(lin % (2 << 20) == 0 && phys % (2 << 20) == 0);
        let at = self.entry_addr(ram, lin, PD);
        ram.write_u64(at, phys | flags | PS);
    }

    /// Maps the 1 GiB page at `lin` to `phys` (both 1 GiB aligned).
    pub fn map_1g(&mut self, ram: &GuestRam, lin: u64, phys: u64, flags: u64) {
        assert!(lin % (1 << 30) == 0 && phys % (1 << 30) == 0);
        let at = self.entry_addr(ram, lin, PDPT);
        ram.write_u64(at, phys | flags | PS);
    }

    /// Physical address of the 4 KiB page's entry for `lin` (which must be mapped so).
    pub fn pte_addr(&mut self, ram: &GuestRam, lin: u64) -> u64 {
        self.entry_addr(ram, lin, PT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_paging::{walk64, Access, LongRegs, PageSize};

    use crate::read_only_ram::ReadOnlyRam as Ram;

    /// The product's 4-level walker reads back what the builder wrote, at every page size.
    #[test]
    fn the_walker_finds_what_was_mapped() {
        let ram = GuestRam::new(4 << 20).unwrap();
        let mut t = LongTables::new(&ram);
        t.map(&ram, 0x5555_5555_4000, 0x30_0000, URW);
        t.map_2m(&ram, 0x6000_0020_0000, 0x20_0000, URW);
        t.map_1g(&ram, 0x4000_0000_0000, 0, URW | NX);
        let regs = LongRegs::new(CR3, CR4, EFER, 52);
        let mem = Ram(&ram);
        let r = walk64(&mem, &regs, 0x5555_5555_4123, Access::Write, false).unwrap();
        assert_eq!((r.phys_page, r.size), (0x30_0000, PageSize::Size4K));
        let r = walk64(&mem, &regs, 0x6000_0021_1000, Access::Read, false).unwrap();
        assert_eq!((r.phys_page, r.size), (0x21_1000, PageSize::Size2M));
        let r = walk64(&mem, &regs, 0x4000_0012_3000, Access::Read, false).unwrap();
        assert_eq!(
            (r.phys_page, r.size, r.executable),
            (0x12_3000, PageSize::Size1G, false)
        );
        assert!(walk64(&mem, &regs, 0x4000_0000_0000, Access::Fetch, false).is_err());
        assert!(walk64(&mem, &regs, 0x5555_5555_5000, Access::Read, false).is_err());
    }
}
