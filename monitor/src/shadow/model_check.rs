//! Property test of the mirror record against a reference TLB: random sequences of demand
//! fills over small and large guest pages, INVLPGs, flushes, write protections and guest
//! page-table edits (which, as on hardware, change nothing cached until an invalidation).
//!
//! The reference keeps each translation a fill used, whole: a large page is one entry covering
//! 2 or 4 MiB, as in a hardware TLB. An INVLPG drops every entry covering its page, a flush
//! every (non-global) entry. After each step every mirrored page must be explained by an entry
//! still there (same physical page, no more permission), no writable mirror may reach a
//! write-protected page, and the record must equal what is really mapped.

use super::tests::Fake;
use super::*;
use guest_paging::entry::{A, D, G, NX, P, PS, RW, US};
use guest_paging::{self as paging, Access, PagingRegs, PhysMemory, Translation};
use std::cell::RefCell;

const RAM_PAGES: usize = 2048; // 8 MiB
/// Paging structures live in physical pages 0..16; data pages above.
const TABLE_PAGES: u64 = 16;
/// The linear window the sequences use: 16 MiB, four 4 MiB regions.
const WINDOW_LPN: u32 = 0x1000;
const WINDOW_PAGES: u32 = 4096;

struct Ram(RefCell<Vec<u8>>);

impl Ram {
    fn write(&self, pa: u64, v: u64, wide: bool) {
        let n = if wide { 8 } else { 4 };
        let pa = pa as usize;
        self.0.borrow_mut()[pa..pa + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }
    fn slice(&self, pa: u64, n: usize) -> Option<[u8; 8]> {
        let m = self.0.borrow();
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(m.get(pa as usize..pa as usize + n)?);
        Some(b)
    }
}

impl PhysMemory for Ram {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        self.slice(pa, 4).map(|b| u64::from_le_bytes(b) as u32)
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        self.slice(pa, 8).map(u64::from_le_bytes)
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let ok = self.read_u32(pa)? == old;
        if ok {
            self.write(pa, u64::from(new), false);
        }
        Some(ok)
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let ok = self.read_u64(pa)? == old;
        if ok {
            self.write(pa, new, true);
        }
        Some(ok)
    }
}

/// A deterministic xorshift generator: the seed names a failing sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One translation as a TLB holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cached {
    first_lpn: u32,
    pages: u32,
    first_ppn: u64,
    writable: bool,
    executable: bool,
    global: bool,
}

impl Cached {
    fn covers(&self, lpn: u32) -> bool {
        (self.first_lpn..self.first_lpn + self.pages).contains(&lpn)
    }
}

struct World {
    rng: Rng,
    pae: bool,
    ram: Ram,
    regs: PagingRegs,
    shadow: Shadow,
    mapped: Fake,
    tlb: Vec<Cached>,
    log: Vec<String>,
}

impl World {
    fn new(seed: u64, pae: bool) -> Self {
        let regs = if pae {
            // PDPT at 0, one page directory (the window is in the first GiB) at page 1.
            PagingRegs {
                cr0: 1 << 31,
                cr3: 0,
                cr4: (1 << 5) | (1 << 7),
                efer: 1 << 11,
            }
        } else {
            PagingRegs {
                cr0: 1 << 31,
                cr3: 0,
                cr4: (1 << 4) | (1 << 7),
                efer: 0,
            }
        };
        let w = World {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            pae,
            ram: Ram(RefCell::new(vec![0; RAM_PAGES * 4096])),
            regs,
            shadow: Shadow::new(RAM_PAGES),
            mapped: Fake::default(),
            tlb: Vec::new(),
            log: Vec::new(),
        };
        if pae {
            w.ram.write(0, 0x1000 | P, true);
        }
        w
    }

    fn pde_addr(&self, lpn: u32) -> u64 {
        if self.pae {
            0x1000 + u64::from(lpn >> 9) * 8
        } else {
            u64::from(lpn >> 10) * 4
        }
    }

    fn large_pages(&self) -> u32 {
        if self.pae {
            512
        } else {
            1024
        }
    }

    fn random_flags(&mut self) -> u64 {
        let mut f = P;
        for (bit, percent) in [(RW, 60), (US, 90), (A, 50), (D, 40), (G, 20)] {
            if self.rng.chance(percent) {
                f |= bit;
            }
        }
        if self.pae && self.rng.chance(20) {
            f |= NX;
        }
        f
    }

    /// A guest page-table edit, without any invalidation.
    fn edit(&mut self) {
        let lpn = WINDOW_LPN + self.rng.below(u64::from(WINDOW_PAGES)) as u32;
        let pde_pa = self.pde_addr(lpn);
        let value = match self.rng.below(4) {
            0 => 0,
            1 => {
                // A large page at an aligned physical address in the data area.
                let bytes = u64::from(self.large_pages()) * 4096;
                let base = bytes * (1 + self.rng.below(RAM_PAGES as u64 * 4096 / bytes - 1));
                base | PS | self.random_flags()
            }
            2 => {
                let table = 2 + self.rng.below(TABLE_PAGES - 2);
                (table << 12) | P | RW | US
            }
            _ => {
                // One entry of a page table, whichever directory uses it.
                let table = 2 + self.rng.below(TABLE_PAGES - 2);
                let entries = if self.pae { 512 } else { 1024 };
                let pte_pa = (table << 12) + self.rng.below(entries) * if self.pae { 8 } else { 4 };
                let ppn = TABLE_PAGES + self.rng.below(RAM_PAGES as u64 - TABLE_PAGES);
                let v = if self.rng.chance(15) {
                    0
                } else {
                    (ppn << 12) | self.random_flags()
                };
                self.log.push(format!("pte {pte_pa:#x} = {v:#x}"));
                self.ram.write(pte_pa, v, self.pae);
                return;
            }
        };
        self.log.push(format!("pde {pde_pa:#x} = {value:#x}"));
        self.ram.write(pde_pa, value, self.pae);
    }

    /// What the executor's demand fill does (monitor.rs `page_fault`): walk, mirror the page.
    fn fill(&mut self) {
        let lpn = WINDOW_LPN + self.rng.below(u64::from(WINDOW_PAGES)) as u32;
        let access = [Access::Read, Access::Write, Access::Fetch][self.rng.below(3) as usize];
        let Ok(t) = paging::walk(&self.ram, &self.regs, lpn << 12, access, true) else {
            return;
        };
        let ppn = t.phys_page >> 12;
        let mut writable = t.writable && t.dirty;
        if self.shadow.is_wp(ppn) {
            if access == Access::Write {
                self.shadow.clear_wp(ppn);
            } else {
                writable = false;
            }
        }
        let m = Mirror::of(&t, writable);
        self.log.push(format!("fill {lpn:#x} {access:?} -> {m:?}"));
        self.shadow
            .insert(&mut self.mapped, u64::from(lpn), m)
            .unwrap();
        let cached = cached(lpn, &t);
        if !self.tlb.contains(&cached) {
            self.tlb.push(cached);
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=39 => self.fill(),
            40..=64 => self.edit(),
            65..=89 => {
                // INVLPG, mostly near what is mirrored.
                let lpn = match self.mapped.pages.keys().nth(self.rng.below(64) as usize) {
                    Some(&lin) if self.rng.chance(70) => {
                        let near = (lin >> 12) as i64 + self.rng.below(1100) as i64 - 550;
                        near.clamp(0, (1 << 20) - 1) as u32
                    }
                    _ => WINDOW_LPN + self.rng.below(u64::from(WINDOW_PAGES)) as u32,
                };
                self.log.push(format!("invlpg {lpn:#x}"));
                self.shadow
                    .invalidate(&mut self.mapped, u64::from(lpn))
                    .unwrap();
                self.tlb.retain(|c| !c.covers(lpn));
            }
            90..=94 => {
                self.log.push("flush non-global".into());
                self.shadow.flush_non_global(&mut self.mapped).unwrap();
                self.tlb.retain(|c| c.global);
            }
            95..=96 => {
                self.log.push("flush all".into());
                self.shadow.flush_all(&mut self.mapped).unwrap();
                self.tlb.clear();
            }
            _ => {
                let ppn = TABLE_PAGES + self.rng.below(RAM_PAGES as u64 - TABLE_PAGES);
                self.log.push(format!("write-protect {ppn:#x}"));
                self.shadow.write_protect(&mut self.mapped, ppn).unwrap();
            }
        }
    }

    /// Every mirror is explained by a cached translation; the record matches the mappings.
    fn check(&self) -> Result<(), String> {
        if self.mapped.pages.len() != self.shadow.mapped() {
            return Err(format!(
                "{} pages mapped, {} recorded",
                self.mapped.pages.len(),
                self.shadow.mapped()
            ));
        }
        for (&lin, &(phys, prot)) in &self.mapped.pages {
            let lpn = (lin >> 12) as u32; // the window is below 4 GiB
            let Some(m) = self.shadow.lookup(u64::from(lpn)) else {
                return Err(format!("{lpn:#x} mapped but not recorded"));
            };
            if (m.ppn << 12, m.prot) != (phys, prot) {
                return Err(format!(
                    "{lpn:#x} recorded as {m:?}, mapped {phys:#x}/{prot}"
                ));
            }
            let explained = self.tlb.iter().any(|c| {
                c.covers(lpn)
                    && c.first_ppn + u64::from(lpn - c.first_lpn) == m.ppn
                    && (prot & PROT_WRITE == 0 || c.writable)
                    && (prot & PROT_EXEC == 0 || c.executable)
            });
            if !explained {
                return Err(format!(
                    "mirror {lpn:#x} -> {m:?} outlived every translation it could come from"
                ));
            }
            if prot & PROT_WRITE != 0 && self.shadow.is_wp(m.ppn) {
                return Err(format!(
                    "{lpn:#x}: writable mirror of write-protected {:#x}",
                    m.ppn
                ));
            }
        }
        Ok(())
    }
}

/// The TLB entry for the translation a fill of `lpn` used: the whole large page, if it was one.
fn cached(lpn: u32, t: &Translation) -> Cached {
    let pages = t.size.pages();
    let offset = lpn & (pages - 1);
    Cached {
        first_lpn: lpn - offset,
        pages,
        first_ppn: (t.phys_page >> 12) - u64::from(offset),
        writable: t.writable && t.dirty,
        executable: t.executable,
        global: t.global,
    }
}

fn run(seed: u64, pae: bool, steps: usize) {
    let mut w = World::new(seed, pae);
    for _ in 0..steps {
        w.step();
        if let Err(e) = w.check() {
            let tail = w.log.len().saturating_sub(12);
            panic!(
                "seed {seed} (pae {pae}) after {} steps: {e}\nlast steps:\n  {}",
                w.log.len(),
                w.log[tail..].join("\n  ")
            );
        }
    }
}

#[test]
fn mirror_never_outlives_its_translation_pse() {
    for seed in 0..40 {
        run(seed, false, 600);
    }
}

#[test]
fn mirror_never_outlives_its_translation_pae() {
    for seed in 0..40 {
        run(seed, true, 600);
    }
}

/// The check must be able to fail: dropping only the 4 KiB piece an INVLPG names (the bug this
/// test exists for) is caught.
#[test]
fn check_catches_a_stale_large_piece() {
    for pae in [false, true] {
        let mut w = World::new(1, pae);
        let pages = w.large_pages();
        let lpn = WINDOW_LPN;
        let pde = if pae { 0x20_0000 } else { 0x40_0000 } | PS | P | RW | US | A | D;
        w.ram.write(w.pde_addr(lpn), pde, pae);
        for piece in [1, 5, pages - 1] {
            let t = paging::walk(&w.ram, &w.regs, (lpn + piece) << 12, Access::Read, true).unwrap();
            let m = Mirror {
                ppn: t.phys_page >> 12,
                prot: PROT_READ,
                global: false,
                size: PageSize::Size4K, // the old record: no page size
            };
            w.shadow
                .insert(&mut w.mapped, u64::from(lpn + piece), m)
                .unwrap();
            w.tlb.push(cached(lpn + piece, &t));
        }
        w.check().unwrap();
        w.shadow.invalidate(&mut w.mapped, u64::from(lpn)).unwrap();
        w.tlb.retain(|c| !c.covers(lpn));
        assert!(w.check().is_err(), "pae {pae}: stale pieces went unnoticed");
    }
}
