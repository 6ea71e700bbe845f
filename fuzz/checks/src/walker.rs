//! The guest page-table walker (`host_driver::paging::walk`) against a reference walker.
//!
//! A case is a small guest RAM ([`RAM_PAGES`] pages) holding the paging entries that a walk of
//! one linear address reads, each chosen by the input (flags, and a page of RAM or raw address
//! bits), over a background of input bytes. The walker under test and [`reference_walk`] (a
//! plain transcription of the SDM's 32-bit and PAE paging for CPL 3 accesses, written
//! independently of the walker) must agree on the result and on the memory afterwards.
//! Invariants checked besides: a failed walk, or one without A/D updates, writes nothing; a
//! successful one only sets A bits of the entries it used and D of the final entry on a write;
//! a write needs a writable translation, a fetch an executable one; the physical page is page
//! aligned and within the paging mode's address width. Compare-and-exchange failures (another
//! CPU changing an entry) can be injected: a walk must then retry to the same result, or, when
//! the entry keeps changing, fault without writing anything.

use crate::{Outcome, Reader, Writer};
use host_driver::paging::{self, pf, PageSize, PagingRegs, PhysMemory, Translation, WalkError};
use host_driver::Access;
use std::cell::{Cell, RefCell};

/// Pages of guest RAM in a case (32 KiB: small, so that the copies and comparisons of each
/// case stay cheap).
pub const RAM_PAGES: u64 = 8;
/// Bytes of guest RAM in a case.
pub const RAM_SIZE: usize = (RAM_PAGES * 4096) as usize;

const CR0_PG: u32 = 1 << 31;
const CR4_PSE: u32 = 1 << 4;
const CR4_PAE: u32 = 1 << 5;
const CR4_PGE: u32 = 1 << 7;
const EFER_NXE: u64 = 1 << 11;
const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
const NX: u64 = 1 << 63;
/// Address bits of a PAE entry (MAXPHYADDR 52, as the walker assumes).
const PAE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Guest RAM for the walker under test; compare-and-exchange can be made to fail.
#[derive(Debug)]
pub struct Ram {
    /// The bytes.
    pub bytes: RefCell<Vec<u8>>,
    /// Compare-and-exchange operations still to fail (`u32::MAX`: all of them).
    pub cmpxchg_failures: Cell<u32>,
}

impl Ram {
    /// RAM holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Ram {
            bytes: RefCell::new(bytes),
            cmpxchg_failures: Cell::new(0),
        }
    }
    fn contended(&self) -> bool {
        let n = self.cmpxchg_failures.get();
        if n == 0 {
            return false;
        }
        if n != u32::MAX {
            self.cmpxchg_failures.set(n - 1);
        }
        true
    }
}

/// Reads `N` bytes at `pa` of `mem`, or `None` outside it.
pub fn read_n<const N: usize>(mem: &[u8], pa: u64) -> Option<[u8; N]> {
    let start = usize::try_from(pa).ok()?;
    mem.get(start..start.checked_add(N)?)?.try_into().ok()
}

fn read32(mem: &[u8], pa: u64) -> Option<u32> {
    read_n::<4>(mem, pa).map(u32::from_le_bytes)
}

fn read64(mem: &[u8], pa: u64) -> Option<u64> {
    read_n::<8>(mem, pa).map(u64::from_le_bytes)
}

/// Writes `v` at `pa` if it lies inside `mem`.
pub fn write_n(mem: &mut [u8], pa: u64, v: &[u8]) {
    let Ok(start) = usize::try_from(pa) else {
        return;
    };
    if let Some(dst) = start
        .checked_add(v.len())
        .and_then(|end| mem.get_mut(start..end))
    {
        dst.copy_from_slice(v);
    }
}

impl PhysMemory for Ram {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        read32(&self.bytes.borrow(), pa)
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        read64(&self.bytes.borrow(), pa)
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let cur = self.read_u32(pa)?;
        if cur != old || self.contended() {
            return Some(false);
        }
        write_n(&mut self.bytes.borrow_mut(), pa, &new.to_le_bytes());
        Some(true)
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let cur = self.read_u64(pa)?;
        if cur != old || self.contended() {
            return Some(false);
        }
        write_n(&mut self.bytes.borrow_mut(), pa, &new.to_le_bytes());
        Some(true)
    }
}

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

fn pae_mode(regs: &PagingRegs) -> bool {
    regs.cr4 & CR4_PAE != 0
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
    fn read(r: &mut Reader<'_>) -> Self {
        EntrySpec {
            raw: r.u64(),
            place: r.u8(),
        }
    }
    fn write(&self, w: &mut Writer) {
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
    fn access(&self) -> Access {
        match self.mode >> 6 {
            1 => Access::Write,
            2 => Access::Fetch,
            _ => Access::Read,
        }
    }
}

/// The widest physical address a translation can have in this mode.
fn max_phys(regs: &PagingRegs) -> u64 {
    if regs.cr0 & CR0_PG == 0 {
        1 << 32
    } else if pae_mode(regs) {
        1 << 52
    } else {
        1 << 40 // PSE-36 (40 bits here)
    }
}

/// Checks that `after` differs from `before` only by A (bit 5) and D (bit 6) bits set in the
/// low byte of 4-byte aligned words (entries of either width).
fn only_ad_bits_set(before: &[u8], after: &[u8]) -> Result<(), String> {
    for (w, (b8, a8)) in before
        .chunks_exact(8)
        .zip(after.chunks_exact(8))
        .enumerate()
    {
        if a8 == b8 {
            continue;
        }
        for (j, (&b, &a)) in b8.iter().zip(a8).enumerate() {
            let i = w * 8 + j;
            if a != b && (i % 4 != 0 || a & !b & !0x60 != 0 || b & !a != 0) {
                return Err(format!(
                    "byte {i:#x} changed from {b:#04x} to {a:#04x}: not just A/D bits set"
                ));
            }
        }
    }
    Ok(())
}

/// The fuzz target: see the module documentation. Every input is a case.
pub fn check(data: &[u8]) -> Outcome {
    let case = WalkCase::parse(data);
    let regs = regs_from_mode(case.mode, place_cr3(case.cr3, case.cr3_place));
    let access = case.access();
    let update_ad = case.mode & 0x20 != 0;
    let mut mem = background_ram(&case.background);
    map_linear(&mut mem, &regs, case.linear, &case.levels);
    let before = mem.clone();

    let want = reference_walk(&before, &regs, case.linear, access, update_ad);
    let ram = Ram::new(before.clone());
    ram.cmpxchg_failures.set(match case.cmpxchg_failures {
        255 => u32::MAX,
        n => u32::from(n & 7),
    });
    let got = paging::walk(&ram, &regs, case.linear, access, update_ad);
    let after = ram.bytes.into_inner();
    let ctx = || {
        format!(
            "{regs:x?} linear {:#x} {access:?} update_ad {update_ad} cmpxchg failures {}",
            case.linear, case.cmpxchg_failures
        )
    };

    // Invariants that need no reference.
    match &got {
        Ok(t) => {
            assert_eq!(t.phys_page & 0xfff, 0, "unaligned page: {t:x?} ({})", ctx());
            assert!(
                t.phys_page < max_phys(&regs),
                "page beyond the mode's address width: {t:x?} ({})",
                ctx()
            );
            assert!(
                access != Access::Write || t.writable,
                "a write through a read-only translation: {t:x?} ({})",
                ctx()
            );
            assert!(
                access != Access::Fetch || t.executable,
                "a fetch through a non-executable translation: {t:x?} ({})",
                ctx()
            );
            if update_ad && access == Access::Write {
                assert!(t.dirty, "a write without D set: {t:x?} ({})", ctx());
            }
            if !update_ad {
                assert!(
                    after == before,
                    "memory written without update_ad ({})",
                    ctx()
                );
            }
            if let Err(e) = only_ad_bits_set(&before, &after) {
                panic!("{e} ({})", ctx());
            }
        }
        Err(WalkError::Fault(code)) => {
            assert!(after == before, "a failed walk wrote memory ({})", ctx());
            assert_eq!(
                code & pf::U,
                pf::U,
                "fault without U: {code:#x} ({})",
                ctx()
            );
            assert_eq!(code & !0x1f, 0, "unknown fault bits: {code:#x} ({})", ctx());
        }
        Err(WalkError::TableNotInRam) => {
            assert!(after == before, "a failed walk wrote memory ({})", ctx());
        }
    }

    // Against the reference.
    let want_mem = if want.writes.is_empty() {
        before.clone()
    } else {
        let mut m = before.clone();
        want.apply(&mut m);
        m
    };
    if case.cmpxchg_failures == 255 && !want.writes.is_empty() {
        // Every update fails as if another CPU kept changing the entry: the walker gives up
        // with a fault and leaves memory alone.
        assert!(
            matches!(got, Err(WalkError::Fault(c)) if c & pf::U != 0),
            "walk under endless contention gave {got:x?} ({})",
            ctx()
        );
        assert!(
            after == before,
            "walk under contention wrote memory ({})",
            ctx()
        );
        return Outcome::Checked;
    }
    assert_eq!(
        got,
        want.result,
        "walker and reference disagree ({})",
        ctx()
    );
    if after != want_mem {
        let i = after
            .iter()
            .zip(&want_mem)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "memory after the walk differs from the reference's at {i:#x}: {:#04x} vs {:#04x} \
             (reference updates {:x?}) ({})",
            after[i],
            want_mem[i],
            want.writes,
            ctx()
        );
    }
    Outcome::Checked
}

#[cfg(test)]
mod tests {
    use super::*;

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
