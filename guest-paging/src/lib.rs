//! Guest page-table walker: 2-level (with PSE 4 MiB pages) and PAE (with 2 MiB pages and NX),
//! for CPL 3 accesses ([`walk`]), and 4-level IA-32e paging (4 KiB, 2 MiB and 1 GiB pages) for
//! 64-bit guests ([`walk64`], not used by the executor yet). Pure code over a [`PhysMemory`]
//! so that it is unit-tested in-process and used by the executor over its mapping of guest RAM,
//! and by the library's instruction decoder. No `unsafe`, no dependencies: both sides of the
//! process boundary link it.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

/// Kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// Guest-physical memory as seen by the walker. Accesses outside RAM return `None`.
pub trait PhysMemory {
    /// Reads an aligned u32.
    fn read_u32(&self, pa: u64) -> Option<u32>;
    /// Reads an aligned u64.
    fn read_u64(&self, pa: u64) -> Option<u64>;
    /// Atomically replaces `old` by `new` at `pa`; `Some(true)` on success.
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool>;
    /// Atomically replaces `old` by `new` at `pa`; `Some(true)` on success.
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool>;
}

/// The control registers that select the paging mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG).
    pub cr0: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4 (PSE, PAE, PGE).
    pub cr4: u32,
    /// EFER (NXE).
    pub efer: u64,
}

impl PagingRegs {
    /// The registers of a guest state, as the walker needs them.
    pub const fn new(cr0: u32, cr3: u32, cr4: u32, efer: u64) -> Self {
        PagingRegs {
            cr0,
            cr3,
            cr4,
            efer,
        }
    }
}

/// Paging-entry bits (the 64-bit PAE layout; 32-bit entries use the low word).
pub mod entry {
    /// Present.
    pub const P: u64 = 1;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User accessible.
    pub const US: u64 = 1 << 2;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty.
    pub const D: u64 = 1 << 6;
    /// Page size: a large page (in a directory entry).
    pub const PS: u64 = 1 << 7;
    /// Global.
    pub const G: u64 = 1 << 8;
    /// No-execute (PAE with EFER.NXE).
    pub const NX: u64 = 1 << 63;
}
/// Page-fault error code bits (guest view).
pub mod pf {
    /// The fault was a protection violation (page present).
    pub const P: u32 = 1;
    /// Write access.
    pub const W: u32 = 2;
    /// User-mode access.
    pub const U: u32 = 4;
    /// Reserved bit set in a paging entry.
    pub const RSVD: u32 = 8;
    /// Instruction fetch (with NX enabled).
    pub const ID: u32 = 16;
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address of the 4 KiB page.
    pub phys_page: u64,
    /// The guest allows user writes (R/W at every level).
    pub writable: bool,
    /// The D bit of the final entry is set (after this walk's update).
    pub dirty: bool,
    /// Execution is allowed (no NX at any level, or NX disabled).
    pub executable: bool,
    /// The final entry is global (G with CR4.PGE).
    pub global: bool,
    /// The size of the guest page the translation came from.
    pub size: PageSize,
    /// The Accessed bit is set in every entry the walk used (before the walk, or by it with
    /// `update_ad`): a cache may hold this translation without the guest seeing a difference,
    /// as a TLB holds only translations of accessed pages.
    pub accessed: bool,
}

/// The size of a guest page. An INVLPG anywhere in a large page drops its whole translation,
/// so whoever caches 4 KiB pieces of one must know which large page each came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// A 4 KiB page (or paging off).
    Size4K,
    /// A PAE 2 MiB page.
    Size2M,
    /// A 32-bit-paging 4 MiB page (CR4.PSE).
    Size4M,
    /// A 4-level-paging 1 GiB page (PS in a PDPTE): only [`walk64`] makes these, so callers
    /// of the 32-bit [`walk`] never see one.
    Size1G,
}

impl PageSize {
    /// The number of 4 KiB pages in a page of this size.
    pub const fn pages(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 512,
            PageSize::Size4M => 1024,
            PageSize::Size1G => 1 << 18,
        }
    }
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A guest-visible page fault with this error code.
    Fault(u32),
    /// A paging structure lies outside guest RAM: the emulator must do this walk.
    TableNotInRam,
    /// The linear address is not canonical (bits 63:47 not all equal): on hardware a #GP (or
    /// #SS), not a page fault, so the emulator must perform the access. Only [`walk64`]
    /// reports it.
    NonCanonical,
}

mod read;
mod walk;
mod walk64;

pub use read::{read_linear, read_linear64};
pub use walk::walk;
pub use walk64::{is_canonical, walk64, LongRegs};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests64;
