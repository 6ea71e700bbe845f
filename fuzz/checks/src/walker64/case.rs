//! 4-level walker cases: the registers, the linear address and access, and the four entries a
//! walk of it reads, decoded from fuzz input, and the guest RAM they are written into.

use super::{phys_bits, CR4_PCIDE, CR4_PGE, CR4_SMEP, EFER_NXE, PS};
use crate::walker::{write_n, EntrySpec, RAM_PAGES};
use crate::{Reader, Writer};
use guest_paging::LongRegs;
use host_driver::Access;

/// Bits MAXPHYADDR-1:12: an entry's (or CR3's) address bits for MAXPHYADDR `m`.
fn addr_bits(m: u32) -> u64 {
    ((1u64 << m) - 1) & !0xfff
}

/// The value of `spec` under MAXPHYADDR `m`: bit 7 of `place` keeps `raw`, else bits 0..6
/// pick the page of RAM its address bits point to, and `raw` gives every other bit (flags,
/// reserved and ignored bits).
pub fn entry_value(spec: &EntrySpec, m: u32) -> u64 {
    if spec.place & 0x80 != 0 {
        spec.raw
    } else {
        (spec.raw & !addr_bits(m)) | ((u64::from(spec.place & 0x7f) % RAM_PAGES) << 12)
    }
}

/// Writes the entries that a walk of `linear` reads (as far as they lie in `mem`), PML4E first,
/// up to the leaf: a PDPTE or PDE with PS ends the walk (PS in a PML4E is a reserved bit, so
/// that walk ends there anyway). A later entry may overwrite an earlier one.
pub fn map_linear64(mem: &mut [u8], regs: &LongRegs, linear: u64, levels: &[EntrySpec; 4]) {
    let m = phys_bits(regs);
    let mut table = regs.cr3 & addr_bits(m);
    for (level, spec) in levels.iter().enumerate() {
        let index = (linear >> (39 - 9 * level)) & 0x1ff;
        let e = entry_value(spec, m);
        write_n(mem, table | (index << 3), &e.to_le_bytes());
        if (level == 1 || level == 2) && e & PS != 0 {
            return;
        }
        table = e & addr_bits(m);
    }
}

/// A 4-level walker case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk64Case {
    /// Bit 0 EFER.NXE, 1 CR4.PGE, 2 CR4.PCIDE, 3 CR4.SMEP, 4 update A/D; bits 5..6 the access
    /// (0 read, 1 write, 2 fetch, 3 read); bit 7 keep `linear` as is, else sign-extend it from
    /// bit 47 (canonical).
    pub mode: u8,
    /// Compare-and-exchange failures to inject: 255 = every one, else the low 3 bits.
    pub cmpxchg_failures: u8,
    /// MAXPHYADDR: bit 7 set gives the byte as is (the walker clamps it to 32..=52), else
    /// 32 + the byte mod 21.
    pub maxphyaddr: u8,
    /// The linear address (see `mode` bit 7).
    pub linear: u64,
    /// CR3: bit 7 of `cr3_place` keeps it, else bits 0..6 pick the PML4 page of RAM and CR3's
    /// other bits (PCID, bits above MAXPHYADDR) stay.
    pub cr3: u64,
    /// Where CR3 points.
    pub cr3_place: u8,
    /// PML4E, PDPTE, PDE and PTE.
    pub levels: [EntrySpec; 4],
    /// RAM background, repeated.
    pub background: Vec<u8>,
}

impl Walk64Case {
    /// Decodes a case from fuzz input.
    pub fn parse(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        Walk64Case {
            mode: r.u8(),
            cmpxchg_failures: r.u8(),
            maxphyaddr: r.u8(),
            linear: r.u64(),
            cr3: r.u64(),
            cr3_place: r.u8(),
            levels: [
                EntrySpec::read(&mut r),
                EntrySpec::read(&mut r),
                EntrySpec::read(&mut r),
                EntrySpec::read(&mut r),
            ],
            background: r.rest().to_vec(),
        }
    }
    /// Encodes the case as fuzz input.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.mode)
            .u8(self.cmpxchg_failures)
            .u8(self.maxphyaddr)
            .u64(self.linear)
            .u64(self.cr3)
            .u8(self.cr3_place);
        for l in &self.levels {
            l.write(&mut w);
        }
        w.bytes(&self.background);
        w.0
    }
    /// The registers of the case.
    pub fn regs(&self) -> LongRegs {
        let bit = |b: u8, v: u64| if self.mode & (1 << b) != 0 { v } else { 0 };
        let maxphyaddr = if self.maxphyaddr & 0x80 != 0 {
            self.maxphyaddr
        } else {
            32 + self.maxphyaddr % 21
        };
        let mut regs = LongRegs {
            cr3: self.cr3,
            cr4: bit(1, CR4_PGE) | bit(2, CR4_PCIDE) | bit(3, CR4_SMEP),
            efer: bit(0, EFER_NXE),
            maxphyaddr,
        };
        if self.cr3_place & 0x80 == 0 {
            let m = addr_bits(phys_bits(&regs));
            let page = u64::from(self.cr3_place & 0x7f) % RAM_PAGES;
            regs.cr3 = (self.cr3 & !m) | (page << 12);
        }
        regs
    }
    /// The linear address of the case.
    pub fn linear(&self) -> u64 {
        if self.mode & 0x80 != 0 {
            self.linear
        } else {
            (((self.linear << 16) as i64) >> 16) as u64
        }
    }
    /// The access of the case.
    pub fn access(&self) -> Access {
        match (self.mode >> 5) & 3 {
            1 => Access::Write,
            2 => Access::Fetch,
            _ => Access::Read,
        }
    }
    /// Whether the walk updates A/D bits.
    pub fn update_ad(&self) -> bool {
        self.mode & 0x10 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_round_trip_through_their_encoding() {
        let case = Walk64Case {
            mode: 0x9b,
            cmpxchg_failures: 3,
            maxphyaddr: 0x84,
            linear: 0x1234_5678_9abc_def0,
            cr3: 0xabc,
            cr3_place: 0x81,
            levels: [
                EntrySpec::to_page(1, 7),
                EntrySpec {
                    raw: u64::MAX,
                    place: 0x80,
                },
                EntrySpec::default(),
                EntrySpec::to_page(3, 5),
            ],
            background: vec![1, 2, 3],
        };
        assert_eq!(Walk64Case::parse(&case.encode()), case);
    }

    #[test]
    fn the_case_decoding_places_cr3_and_canonicalizes() {
        let case = Walk64Case {
            mode: 0x20,
            maxphyaddr: 8, // 40
            linear: 0x0000_8000_0000_1000,
            cr3: 1 << 63 | 1 << 45 | 0xfff_f000 | 0xabc,
            cr3_place: 2,
            ..Default::default()
        };
        let regs = case.regs();
        assert_eq!(regs.maxphyaddr, 40);
        assert_eq!(regs.cr3, 1 << 63 | 1 << 45 | 0x2abc);
        assert_eq!(case.linear(), 0xffff_8000_0000_1000);
        assert_eq!(case.access(), Access::Write);
        assert!(!case.update_ad());
    }
}
