//! The guest page-table walker (`guest_paging::walk`) against a reference walker.
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
//!
//! Here: the RAM the walker under test sees and the checks; `case.rs`: decoding a case and
//! writing its entries; `reference.rs`: the reference walker.

mod case;
mod reference;

pub use case::{background_ram, map_linear, place_cr3, regs_from_mode, EntrySpec, WalkCase};
pub use reference::{reference_walk, AdWrite, RefWalk};

use crate::Outcome;
use guest_paging::{self as paging, pf, PagingRegs, PhysMemory, Translation, WalkError};
use host_driver::Access;
use std::cell::{Cell, RefCell};

/// Pages of guest RAM in a case (32 KiB: small, so that the copies and comparisons of each
/// case stay cheap).
pub const RAM_PAGES: u64 = 8;
/// Bytes of guest RAM in a case.
pub const RAM_SIZE: usize = (RAM_PAGES * 4096) as usize;

// Control-register and paging-entry bits (SDM vol. 3, chapter 4), for the reference walker
// and the case builder.
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

/// PAE paging (else 32-bit paging, when paging is on).
fn pae_mode(regs: &PagingRegs) -> bool {
    regs.cr4 & CR4_PAE != 0
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
pub(crate) fn only_ad_bits_set(before: &[u8], after: &[u8]) -> Result<(), String> {
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
    if let Ok(t) = &got {
        assert!(
            t.phys_page < max_phys(&regs),
            "page beyond the mode's address width: {t:x?} ({})",
            ctx()
        );
    }
    assert!(
        !matches!(got, Err(WalkError::NonCanonical)),
        "the 32-bit walker called an address non-canonical ({})",
        ctx()
    );
    invariants(&got, access, update_ad, &before, &after, &ctx);

    against_reference(&got, &want, &before, &after, case.cmpxchg_failures, &ctx)
}

/// What any walk, 32-bit or 4-level, must satisfy whatever the tables say: a translation is
/// page aligned, allows the access, has D set after a write that updates A/D, and the walk
/// changed nothing but A/D bits (nothing at all without `update_ad`); a failed walk wrote
/// nothing, and a fault is a user-mode #PF with known bits only.
pub(crate) fn invariants(
    got: &Result<Translation, WalkError>,
    access: Access,
    update_ad: bool,
    before: &[u8],
    after: &[u8],
    ctx: &dyn Fn() -> String,
) {
    match got {
        Ok(t) => {
            assert_eq!(t.phys_page & 0xfff, 0, "unaligned page: {t:x?} ({})", ctx());
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
            if let Err(e) = only_ad_bits_set(before, after) {
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
        Err(WalkError::TableNotInRam | WalkError::NonCanonical) => {
            assert!(after == before, "a failed walk wrote memory ({})", ctx());
        }
    }
}

/// The walk under test (`got`, leaving `after` in memory) against the reference's (`want`,
/// applied to `before`), for both walkers. `cmpxchg_failures == 255` injects endless
/// contention: then the walker must give up with a fault and write nothing.
pub(crate) fn against_reference(
    got: &Result<Translation, WalkError>,
    want: &RefWalk,
    before: &[u8],
    after: &[u8],
    cmpxchg_failures: u8,
    ctx: &dyn Fn() -> String,
) -> Outcome {
    let mut want_mem = before.to_vec();
    want.apply(&mut want_mem);
    if cmpxchg_failures == 255 && !want.writes.is_empty() {
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
        *got,
        want.result,
        "walker and reference disagree ({})",
        ctx()
    );
    if after != want_mem.as_slice() {
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
