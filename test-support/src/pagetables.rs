//! Synthetic guest page tables in guest RAM: 2-level (with PSE) or PAE (with NX), CR3 at
//! 0x1000 and further tables allocated upwards from 0x2000 (below 1 MiB). The one builder
//! behind the host-driver tests' [`crate::vm::Vm`] and accel-core's C-ABI guest.

use host_driver::GuestRam;

/// Paging-entry bits (the PAE layout; 2-level entries use the low word).
pub mod bits {
    pub use guest_paging::entry::{A, D, G, NX, P, PS, RW, US};
    /// Present, writable, user: an ordinary user page.
    pub const URW: u64 = P | RW | US;
}
use bits::*;

/// The paging mode of a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 32-bit paging, CR4.PSE set.
    TwoLevel,
    /// PAE paging, EFER.NXE set.
    Pae,
}

impl Mode {
    /// CR0 (PG, WP, NE, ET, PE), CR4 (PSE or PAE, PGE) and EFER for this mode.
    pub fn control_registers(self) -> (u32, u32, u64) {
        const CR0: u32 = 0x8001_0031;
        match self {
            Mode::TwoLevel => (CR0, 0x10 | 0x80, 0),
            Mode::Pae => (CR0, 0x20 | 0x80, 1 << 11),
        }
    }
}

/// Where the fixtures put guest RAM, code, data and stack (linear), and the physical pages
/// behind them: 64 KiB each, mapped by [`PageTables::map_layout`].
pub mod layout {
    /// Guest RAM size.
    pub const RAM_SIZE: u64 = 16 << 20;
    /// Code (linear).
    pub const CODE: u32 = 0x0040_0000;
    /// Code (physical).
    pub const CODE_PHYS: u64 = 0x0010_0000;
    /// Data (linear).
    pub const DATA: u32 = 0x0050_0000;
    /// Data (physical).
    pub const DATA_PHYS: u64 = 0x0020_0000;
    /// Top of the stack (linear; it grows down).
    pub const STACK_TOP: u32 = 0x0080_0000;
    /// Stack (physical).
    pub const STACK_PHYS: u64 = 0x0030_0000;
}
use layout::*;

/// The page tables' root.
pub const CR3: u64 = 0x1000;
const TABLES_END: u64 = 0x0010_0000;

/// Where the tables are and where the next one goes. The tables themselves live in guest RAM.
#[derive(Debug)]
pub struct PageTables {
    /// The paging mode.
    pub mode: Mode,
    next_table: u64,
}

impl PageTables {
    /// Empty tables for `mode` in `ram` (PAE: four PDPTEs with their page directories).
    pub fn new(ram: &GuestRam, mode: Mode) -> PageTables {
        let mut t = PageTables {
            mode,
            next_table: CR3 + 0x1000,
        };
        if mode == Mode::Pae {
            for i in 0..4 {
                let pd = t.alloc_table();
                ram.write_u64(CR3 + 8 * i, pd | P);
            }
        }
        t
    }

    /// A fresh, zeroed page for a table.
    pub fn alloc_table(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 4096;
        assert!(self.next_table < TABLES_END, "page-table area exhausted");
        t
    }

    /// Physical address of the PDE for `lin`.
    pub fn pde_addr(&self, ram: &GuestRam, lin: u32) -> u64 {
        match self.mode {
            Mode::TwoLevel => CR3 + u64::from(lin >> 22) * 4,
            Mode::Pae => {
                let pdpte = ram.read_u64(CR3 + u64::from(lin >> 30) * 8);
                (pdpte & !0xfff) + u64::from((lin >> 21) & 0x1ff) * 8
            }
        }
    }

    /// The entry at `pa`.
    pub fn read_entry(&self, ram: &GuestRam, pa: u64) -> u64 {
        match self.mode {
            Mode::TwoLevel => u64::from(ram.read_u32(pa)),
            Mode::Pae => ram.read_u64(pa),
        }
    }

    /// Writes the entry at `pa`.
    pub fn write_entry(&self, ram: &GuestRam, pa: u64, v: u64) {
        match self.mode {
            Mode::TwoLevel => ram.write_u32(pa, v as u32),
            Mode::Pae => ram.write_u64(pa, v),
        }
    }

    /// Physical address of the PTE for `lin` (creating its page table if needed).
    pub fn pte_addr(&mut self, ram: &GuestRam, lin: u32) -> u64 {
        let pde_pa = self.pde_addr(ram, lin);
        let mut pde = self.read_entry(ram, pde_pa);
        if pde & P == 0 {
            pde = self.alloc_table() | URW;
            self.write_entry(ram, pde_pa, pde);
        }
        match self.mode {
            Mode::TwoLevel => (pde & 0xffff_f000) + u64::from((lin >> 12) & 0x3ff) * 4,
            Mode::Pae => (pde & 0x000f_ffff_ffff_f000) + u64::from((lin >> 12) & 0x1ff) * 8,
        }
    }

    /// Maps the 4 KiB page at `lin` to `phys` with entry flags `flags`.
    pub fn map(&mut self, ram: &GuestRam, lin: u32, phys: u64, flags: u64) {
        let pa = self.pte_addr(ram, lin);
        self.write_entry(ram, pa, phys | flags);
    }

    /// Maps the [`layout`]'s code, data and stack, 16 user-writable pages each.
    pub fn map_layout(&mut self, ram: &GuestRam) {
        for i in 0..16u32 {
            let off = u64::from(i) * 4096;
            self.map(ram, CODE + i * 4096, CODE_PHYS + off, URW);
            self.map(ram, DATA + i * 4096, DATA_PHYS + off, URW);
            self.map(ram, STACK_TOP - (i + 1) * 4096, STACK_PHYS + off, URW);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_only_ram::ReadOnlyRam as Ram;
    use guest_paging::{walk, Access, PagingRegs};

    /// The walker (the product's) reads back what the builder wrote, in both modes.
    #[test]
    fn the_walker_finds_what_was_mapped() {
        for mode in [Mode::TwoLevel, Mode::Pae] {
            let ram = GuestRam::new(4 << 20).unwrap();
            let mut t = PageTables::new(&ram, mode);
            t.map(&ram, 0x0804_8000, 0x0030_0000, URW);
            t.map(&ram, 0xbfff_f000, 0x0031_0000, P | US);
            let (cr0, cr4, efer) = mode.control_registers();
            let regs = PagingRegs::new(cr0, CR3 as u32, cr4, efer);
            let r = walk(&Ram(&ram), &regs, 0x0804_8123, Access::Write, false).unwrap();
            assert_eq!(r.phys_page, 0x0030_0000, "{mode:?}");
            assert!(walk(&Ram(&ram), &regs, 0xbfff_f000, Access::Write, false).is_err());
            assert!(walk(&Ram(&ram), &regs, 0x0040_0000, Access::Read, false).is_err());
        }
    }
}
