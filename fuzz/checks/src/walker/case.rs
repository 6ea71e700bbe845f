//! Walker cases: the paging mode, the linear address and access, and the entries that a walk
//! of it reads, decoded from fuzz input, and the guest RAM they are written into.

use super::{pae_mode, write_n, CR0_PG, CR4_PAE, CR4_PGE, CR4_PSE, EFER_NXE, PAE_ADDR, PS};
use super::{RAM_PAGES, RAM_SIZE};
use crate::{Reader, Writer};
use guest_paging::PagingRegs;
use host_driver::Access;

/// One paging entry of a case: its value, and where its address bits point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntrySpec {
    /// The entry (flags, reserved bits; address bits too when `place` says raw).
    pub raw: u64,
    /// Bit 7 set: keep `raw`'s address bits; else bits 0..6 pick the page of RAM it points to.
    pub place: u8,
}

impl EntrySpec {
    /// An entry pointing to RAM page `page` with `flags`.
    pub fn to_page(page: u8, flags: u64) -> Self {
        EntrySpec {
            raw: flags,
            place: page & 0x7f,
        }
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Self {
        EntrySpec {
            raw: r.u64(),
            place: r.u8(),
        }
    }
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.raw).u8(self.place);
    }
    fn value(&self, pae: bool) -> u64 {
        let addr_mask = if pae { PAE_ADDR } else { 0xffff_f000 };
        let v = if self.place & 0x80 != 0 {
            self.raw
        } else {
            (self.raw & !addr_mask) | ((u64::from(self.place & 0x7f) % RAM_PAGES) << 12)
        };
        if pae {
            v
        } else {
            v & 0xffff_ffff
        }
    }
}

/// CR3 of a case: bit 7 of `place` set keeps `raw`, else bits 0..6 pick a page of RAM.
pub fn place_cr3(raw: u32, place: u8) -> u32 {
    if place & 0x80 != 0 {
        raw
    } else {
        (raw & 0xfff) | ((u32::from(place & 0x7f) % RAM_PAGES as u32) << 12)
    }
}

/// Writes the entries that a walk of `linear` reads (as far as they lie in `mem`), top level
/// first; a later entry may overwrite an earlier one (aliasing tables are cases too).
pub fn map_linear(mem: &mut [u8], regs: &PagingRegs, linear: u32, levels: &[EntrySpec; 3]) {
    let lin = u64::from(linear);
    if !pae_mode(regs) {
        let pde_pa = u64::from(regs.cr3 & !0xfff) + (lin >> 22) * 4;
        let pde = levels[0].value(false);
        write_n(mem, pde_pa, &(pde as u32).to_le_bytes());
        if pde & PS != 0 && regs.cr4 & CR4_PSE != 0 {
            return;
        }
        let pte_pa = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
        write_n(mem, pte_pa, &(levels[1].value(false) as u32).to_le_bytes());
        return;
    }
    let pdpte_pa = u64::from(regs.cr3 & !0x1f) + (lin >> 30) * 8;
    let pdpte = levels[0].value(true);
    write_n(mem, pdpte_pa, &pdpte.to_le_bytes());
    let pde_pa = (pdpte & PAE_ADDR) + ((lin >> 21) & 0x1ff) * 8;
    let pde = levels[1].value(true);
    write_n(mem, pde_pa, &pde.to_le_bytes());
    if pde & PS != 0 {
        return;
    }
    let pte_pa = (pde & PAE_ADDR) + ((lin >> 12) & 0x1ff) * 8;
    write_n(mem, pte_pa, &levels[2].value(true).to_le_bytes());
}

/// Paging registers from a mode byte: bit 0 PG, 1 PAE, 2 PSE, 3 PGE, 4 EFER.NXE.
pub fn regs_from_mode(mode: u8, cr3: u32) -> PagingRegs {
    let bit = |b: u8, v: u32| if mode & (1 << b) != 0 { v } else { 0 };
    PagingRegs {
        cr0: 0x11 | bit(0, CR0_PG),
        cr3,
        cr4: bit(1, CR4_PAE) | bit(2, CR4_PSE) | bit(3, CR4_PGE),
        efer: if mode & 0x10 != 0 { EFER_NXE } else { 0 },
    }
}

/// RAM filled with `background` repeated (zeros when empty).
pub fn background_ram(background: &[u8]) -> Vec<u8> {
    let mut mem = vec![0; RAM_SIZE];
    if !background.is_empty() {
        for chunk in mem.chunks_mut(background.len()) {
            chunk.copy_from_slice(&background[..chunk.len()]);
        }
    }
    mem
}

/// A walker case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkCase {
    /// Bits 0..4: see [`regs_from_mode`]; bit 5: update A/D; bits 6..7: access (0 read,
    /// 1 write, 2 fetch, 3 read).
    pub mode: u8,
    /// Compare-and-exchange failures to inject: 255 = every one, else the low 3 bits (a few
    /// concurrent changes, after which the walk must reach the undisturbed result).
    pub cmpxchg_failures: u8,
    /// The linear address.
    pub linear: u32,
    /// CR3 (see [`place_cr3`]).
    pub cr3: u32,
    /// Where CR3 points.
    pub cr3_place: u8,
    /// PDE and PTE (32-bit paging) or PDPTE, PDE and PTE (PAE).
    pub levels: [EntrySpec; 3],
    /// RAM background, repeated.
    pub background: Vec<u8>,
}

impl WalkCase {
    /// Decodes a case from fuzz input.
    pub fn parse(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let mode = r.u8();
        let cmpxchg_failures = r.u8();
        let linear = r.u32();
        let cr3 = r.u32();
        let cr3_place = r.u8();
        let levels = [
            EntrySpec::read(&mut r),
            EntrySpec::read(&mut r),
            EntrySpec::read(&mut r),
        ];
        WalkCase {
            mode,
            cmpxchg_failures,
            linear,
            cr3,
            cr3_place,
            levels,
            background: r.rest().to_vec(),
        }
    }
    /// Encodes the case as fuzz input.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.mode)
            .u8(self.cmpxchg_failures)
            .u32(self.linear)
            .u32(self.cr3)
            .u8(self.cr3_place);
        for l in &self.levels {
            l.write(&mut w);
        }
        w.bytes(&self.background);
        w.0
    }
    /// The access of the case.
    pub fn access(&self) -> Access {
        match self.mode >> 6 {
            1 => Access::Write,
            2 => Access::Fetch,
            _ => Access::Read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_round_trip_through_their_encoding() {
        let case = WalkCase {
            mode: 0x63,
            cmpxchg_failures: 3,
            linear: 0x1234_5678,
            cr3: 0xabc,
            cr3_place: 0x81,
            levels: [
                EntrySpec::to_page(1, 7),
                EntrySpec {
                    raw: u64::MAX,
                    place: 0x80,
                },
                EntrySpec::default(),
            ],
            background: vec![1, 2, 3],
        };
        assert_eq!(WalkCase::parse(&case.encode()), case);
    }
}
