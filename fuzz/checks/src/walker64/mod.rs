//! The 4-level walker (`guest_paging::walk64`) against a reference walker, as [`crate::walker`]
//! checks the 32-bit one.
//!
//! A case is the same small guest RAM ([`crate::walker::RAM_PAGES`] pages) holding the four
//! entries (PML4E, PDPTE, PDE, PTE) a walk of one linear address reads, each chosen by the
//! input, over a background of input bytes; the registers (CR3 with PCID and high bits, NXE,
//! PGE, SMEP, MAXPHYADDR) and the linear address (canonical or not) come from the input too.
//! The walker under test and [`reference_walk64`] (transcribed from the SDM independently of
//! it) must agree on the result and on the memory afterwards. Invariants checked besides: a
//! failed walk, or one without A/D updates, writes nothing; a successful one only sets A and
//! D bits; a write needs a writable translation, a fetch an executable one; the physical page
//! is aligned, below 2^MAXPHYADDR, and at the linear address's offset within its page size; a
//! non-canonical address, and only that, is `NonCanonical`. Compare-and-exchange failures are
//! injected as for the 32-bit walker.
//!
//! Here: the checks; `case.rs`: decoding a case and writing its entries; `reference.rs`: the
//! reference walker.

mod case;
mod reference;

pub use case::{entry_value, map_linear64, Walk64Case};
pub use reference::reference_walk64;

use crate::walker::{against_reference, background_ram, invariants, Ram};
use crate::Outcome;
use guest_paging::{self as paging, LongRegs, WalkError};

// Control-register and paging-entry bits (SDM vol. 3A, chapter 4), for the reference walker
// and the case builder.
const CR4_PGE: u64 = 1 << 7;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_SMEP: u64 = 1 << 20;
const EFER_NXE: u64 = 1 << 11;
const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;

/// MAXPHYADDR as `LongRegs` documents it: the register value clamped to 32..=52.
fn phys_bits(regs: &LongRegs) -> u32 {
    u32::from(regs.maxphyaddr).clamp(32, 52)
}

/// The fuzz target: see the module documentation. Every input is a case.
pub fn check(data: &[u8]) -> Outcome {
    let case = Walk64Case::parse(data);
    let regs = case.regs();
    let linear = case.linear();
    let access = case.access();
    let update_ad = case.update_ad();
    let mut mem = background_ram(&case.background);
    map_linear64(&mut mem, &regs, linear, &case.levels);
    let before = mem.clone();

    let want = reference_walk64(&before, &regs, linear, access, update_ad);
    let ram = Ram::new(before.clone());
    ram.cmpxchg_failures.set(match case.cmpxchg_failures {
        255 => u32::MAX,
        n => u32::from(n & 7),
    });
    let got = paging::walk64(&ram, &regs, linear, access, update_ad);
    let after = ram.bytes.into_inner();
    let ctx = || {
        format!(
            "{regs:x?} linear {linear:#x} {access:?} update_ad {update_ad} cmpxchg failures {}",
            case.cmpxchg_failures
        )
    };

    // Invariants that need no reference.
    let canonical = (linear >> 47) == 0 || (linear >> 47) == 0x1_ffff;
    assert_eq!(
        matches!(got, Err(WalkError::NonCanonical)),
        !canonical,
        "NonCanonical iff the address is not canonical: {got:x?} ({})",
        ctx()
    );
    if let Ok(t) = &got {
        let page_bytes = u64::from(t.size.pages()) << 12;
        assert!(
            t.phys_page >> phys_bits(&regs) == 0,
            "page beyond MAXPHYADDR: {t:x?} ({})",
            ctx()
        );
        assert_eq!(
            t.phys_page & (page_bytes - 1),
            linear & (page_bytes - 1) & !0xfff,
            "the page is not at the address's offset in its {:?} page: {t:x?} ({})",
            t.size,
            ctx()
        );
    }
    invariants(&got, access, update_ad, &before, &after, &ctx);

    against_reference(&got, &want, &before, &after, case.cmpxchg_failures, &ctx)
}
