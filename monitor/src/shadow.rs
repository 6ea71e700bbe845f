//! The record of mirrored guest pages: linear page → physical page with flags, a list of
//! mapped pages (for flushes) and per-physical-page reverse chains (for write-protection).
//! All tables are allocated once at setup; no operation allocates.
//!
//! Linear page numbers are 64-bit (a 4-level guest has 36-bit ones), so the record is sparse:
//! a fixed number of slots found through a fixed-capacity hash index. When every slot is in
//! use a fill fails with `ENOMEM`, and the caller flushes and retries, as it does when the
//! host refuses a mapping.
//!
//! The mirror behaves like a TLB, and a guest large page (PSE 4 MiB, PAE 2 MiB) is one
//! translation even though it is mirrored in 4 KiB pieces as they are touched: an INVLPG of any
//! address in it drops every piece (the guest kernel changes a large mapping with one INVLPG per
//! 2/4 MiB, and a piece left behind would keep freed memory reachable). Each entry therefore
//! records the size of the page it came from, and counts of such pieces per large-page region
//! keep the common INVLPG, where no large page is near, a few lookups.

mod index;

use guest_paging::{PageSize, Translation};
use index::FixedMap;

/// Mapping operations on the mirror region (the executor's mmap wrappers, or a fake in tests).
pub trait MirrorOps {
    /// Maps `phys` at `lin` with `prot`.
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32>;
    /// Returns `[lin, lin + pages*4K)` to the reservation.
    fn unmap(&mut self, lin: u64, pages: u32) -> Result<(), i32>;
    /// Returns the whole mirror region to the reservation.
    fn unmap_all(&mut self) -> Result<(), i32>;
    /// Changes the protection of one page.
    fn protect(&mut self, lin: u64, prot: i32) -> Result<(), i32>;
}

const VALID: u64 = 1 << 63;
const WRITABLE: u64 = 1 << 62;
const GLOBAL: u64 = 1 << 61;
const EXEC: u64 = 1 << 60;
/// Bits 56-57: the size of the guest page the entry is a piece of ([`Class`]).
const CLASS_SHIFT: u32 = 56;
const CLASS_MASK: u64 = 3 << CLASS_SHIFT;
const PPN_MASK: u64 = (1 << 40) - 1;
/// How many pages the record holds by default: 1 GiB of mirrors, far beyond a process's
/// working set between two context switches (each flushes the non-global ones).
pub const DEFAULT_SLOTS: usize = 1 << 18;
/// Large-page regions with pieces mirrored at once (each region is one guest large page).
const LARGE_REGIONS: usize = 1 << 14;
/// No slot (chain and head links are slot + 1).
const NONE: u32 = 0;

/// Protection bits (as mmap's PROT_*).
pub const PROT_READ: i32 = 1;
/// PROT_WRITE
pub const PROT_WRITE: i32 = 2;
/// PROT_EXEC
pub const PROT_EXEC: i32 = 4;

/// What a fill mirrors at one linear page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Guest-physical page number.
    pub ppn: u64,
    /// mmap protection.
    pub prot: i32,
    /// The guest's translation is global.
    pub global: bool,
    /// The size of the guest page it is a piece of.
    pub size: PageSize,
}

impl Mirror {
    /// The mirror of a translation: readable; writable when `writable` (the caller has judged
    /// the guest's R/W and D bits and any write protection); executable unless NX applies.
    pub fn of(t: &Translation, writable: bool) -> Mirror {
        Mirror {
            ppn: t.phys_page >> 12,
            prot: PROT_READ
                | if writable { PROT_WRITE } else { 0 }
                | if t.executable { PROT_EXEC } else { 0 },
            global: t.global,
            size: t.size,
        }
    }
}

/// The guest page sizes an entry can be a piece of, as stored in the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Small = 0,
    Large2M = 1,
    Large4M = 2,
    Large1G = 3,
}

impl Class {
    const LARGE: [Class; 3] = [Class::Large2M, Class::Large4M, Class::Large1G];

    fn of(size: PageSize) -> Class {
        match size {
            PageSize::Size4K => Class::Small,
            PageSize::Size2M => Class::Large2M,
            PageSize::Size4M => Class::Large4M,
            PageSize::Size1G => Class::Large1G,
        }
    }
    fn of_entry(e: u64) -> Class {
        match (e & CLASS_MASK) >> CLASS_SHIFT {
            0 => Class::Small,
            1 => Class::Large2M,
            2 => Class::Large4M,
            _ => Class::Large1G,
        }
    }
    fn size(self) -> PageSize {
        match self {
            Class::Small => PageSize::Size4K,
            Class::Large2M => PageSize::Size2M,
            Class::Large4M => PageSize::Size4M,
            Class::Large1G => PageSize::Size1G,
        }
    }
    /// The key of the large-page region holding `lpn`.
    fn region(self, lpn: u64) -> u64 {
        (lpn / u64::from(self.size().pages())) << 2 | self as u64
    }
}

/// The mirror record.
#[derive(Debug)]
pub struct Shadow {
    /// Linear page number → slot.
    index: FixedMap,
    /// Per slot: its linear page number, its entry, the next slot + 1 in its physical page's
    /// reverse chain, and its position in `list`.
    lpn: Box<[u64]>,
    entry: Box<[u64]>,
    next: Box<[u32]>,
    pos: Box<[u32]>,
    /// Slots in use, `list[..n]`, in no particular order (flushes walk it).
    list: Box<[u32]>,
    n: usize,
    /// Slots given back, `free[..free_n]`; slots from `fresh` on were never used.
    free: Box<[u32]>,
    free_n: usize,
    fresh: usize,
    /// Per physical page: the first slot + 1 of its reverse chain.
    head: Box<[u32]>,
    wp: Box<[u64]>,
    /// Per large-page region ([`Class::region`]): how many of its pieces are mirrored.
    large: FixedMap,
}

impl Shadow {
    /// Tables for `ram_pages` physical pages and [`DEFAULT_SLOTS`] mirrored pages.
    pub fn new(ram_pages: usize) -> Self {
        Self::with_slots(ram_pages, DEFAULT_SLOTS)
    }

    /// Tables for `ram_pages` physical pages and at most `slots` mirrored pages.
    pub fn with_slots(ram_pages: usize, slots: usize) -> Self {
        let slots = slots.clamp(1, NONE.wrapping_sub(2) as usize);
        Shadow {
            index: FixedMap::new(slots),
            lpn: vec![0u64; slots].into_boxed_slice(),
            entry: vec![0u64; slots].into_boxed_slice(),
            next: vec![NONE; slots].into_boxed_slice(),
            pos: vec![0u32; slots].into_boxed_slice(),
            list: vec![0u32; slots].into_boxed_slice(),
            n: 0,
            free: vec![0u32; slots].into_boxed_slice(),
            free_n: 0,
            fresh: 0,
            head: vec![NONE; ram_pages].into_boxed_slice(),
            wp: vec![0u64; ram_pages.div_ceil(64)].into_boxed_slice(),
            large: FixedMap::new(LARGE_REGIONS.min(slots)),
        }
    }

    /// Number of mirrored pages.
    #[cfg(test)]
    pub fn mapped(&self) -> usize {
        self.n
    }

    /// The mirror at linear page number `lpn`, if any.
    pub fn lookup(&self, lpn: u64) -> Option<Mirror> {
        let e = self.entry[self.index.get(lpn)? as usize];
        Some(Mirror {
            ppn: e & PPN_MASK,
            prot: PROT_READ
                | if e & WRITABLE != 0 { PROT_WRITE } else { 0 }
                | if e & EXEC != 0 { PROT_EXEC } else { 0 },
            global: e & GLOBAL != 0,
            size: Class::of_entry(e).size(),
        })
    }

    /// True if physical page number `ppn` is write-protected.
    pub fn is_wp(&self, ppn: u64) -> bool {
        self.wp
            .get((ppn / 64) as usize)
            .is_some_and(|w| w & (1 << (ppn % 64)) != 0)
    }

    /// Removes the write-protection of `ppn` (after a logged write).
    pub fn clear_wp(&mut self, ppn: u64) {
        if let Some(w) = self.wp.get_mut((ppn / 64) as usize) {
            *w &= !(1 << (ppn % 64));
        }
    }

    /// Forgets the mirror at `lpn` (the caller unmaps it).
    fn unlink(&mut self, lpn: u64) {
        let Some(slot) = self.index.remove(lpn) else {
            return;
        };
        let s = slot as usize;
        let e = self.entry[s];
        // Reverse chain.
        let me = slot + 1;
        if let Some(h) = self.head.get((e & PPN_MASK) as usize).copied() {
            if h == me {
                self.head[(e & PPN_MASK) as usize] = self.next[s];
            } else {
                let mut cur = h;
                while cur != NONE {
                    let nx = self.next[(cur - 1) as usize];
                    if nx == me {
                        self.next[(cur - 1) as usize] = self.next[s];
                        break;
                    }
                    cur = nx;
                }
            }
        }
        self.next[s] = NONE;
        // List (swap-remove).
        let i = self.pos[s] as usize;
        let last = self.list[self.n - 1];
        self.list[i] = last;
        self.pos[last as usize] = i as u32;
        self.n -= 1;
        self.free[self.free_n] = slot;
        self.free_n += 1;
        let class = Class::of_entry(e);
        if class != Class::Small {
            let key = class.region(lpn);
            match self.large.get(key) {
                Some(1) | None => {
                    self.large.remove(key);
                }
                Some(c) => {
                    let _ = self.large.insert(key, c - 1);
                }
            }
        }
        self.entry[s] = 0;
    }

    /// Mirrors `m` at `lpn`. `ENOMEM` when the record is full (the caller flushes).
    pub fn insert(&mut self, ops: &mut dyn MirrorOps, lpn: u64, m: Mirror) -> Result<(), i32> {
        let class = Class::of(m.size);
        let region = (class != Class::Small).then(|| class.region(lpn));
        let replaces = self.index.get(lpn).is_some();
        let new_region = region.is_some_and(|r| self.large.get(r).is_none());
        if (self.free_n == 0 && self.fresh == self.lpn.len() && !replaces)
            || (new_region && self.large.is_full())
        {
            return Err(libc::ENOMEM);
        }
        ops.map(lpn << 12, m.ppn << 12, m.prot)?;
        self.unlink(lpn);
        let mut e = VALID | (class as u64) << CLASS_SHIFT | (m.ppn & PPN_MASK);
        if m.prot & PROT_WRITE != 0 {
            e |= WRITABLE;
        }
        if m.prot & PROT_EXEC != 0 {
            e |= EXEC;
        }
        if m.global {
            e |= GLOBAL;
        }
        if let Some(r) = region {
            let c = self.large.get(r).unwrap_or(0);
            self.large.insert(r, c + 1).expect("room checked above");
        }
        let slot = if self.free_n > 0 {
            self.free_n -= 1;
            self.free[self.free_n]
        } else {
            self.fresh += 1;
            (self.fresh - 1) as u32
        };
        let s = slot as usize;
        self.index
            .insert(lpn, slot)
            .expect("a free slot has room in the index");
        self.lpn[s] = lpn;
        self.entry[s] = e;
        self.list[self.n] = slot;
        self.pos[s] = self.n as u32;
        self.n += 1;
        if let Some(h) = self.head.get_mut(m.ppn as usize) {
            self.next[s] = *h;
            *h = slot + 1;
        }
        Ok(())
    }

    /// INVLPG of linear page `lpn`: drops its mirror and, when it lies in a guest large page,
    /// every mirrored piece of that page.
    pub fn invalidate(&mut self, ops: &mut dyn MirrorOps, lpn: u64) -> Result<(), i32> {
        let mut runs = Runs::default();
        if self.index.get(lpn).is_some() {
            self.unlink(lpn);
            runs.add(ops, lpn);
        }
        for class in Class::LARGE {
            let region = class.region(lpn);
            if self.large.get(region).is_none() {
                continue;
            }
            let pages = u64::from(class.size().pages());
            let first = lpn / pages * pages;
            let piece_of_it = |me: &Self, l: u64, slot: u32| {
                (first..first + pages).contains(&l)
                    && Class::of_entry(me.entry[slot as usize]) == class
            };
            if pages as usize <= self.n {
                for l in first..first + pages {
                    if let Some(slot) = self.index.get(l) {
                        if piece_of_it(self, l, slot) {
                            self.unlink(l);
                            runs.add(ops, l);
                        }
                    }
                }
            } else {
                // A 1 GiB region holds more pages than there are mirrors: walk the mirrors.
                let mut i = self.n;
                while i > 0 {
                    i -= 1;
                    let slot = self.list[i];
                    let l = self.lpn[slot as usize];
                    if piece_of_it(self, l, slot) {
                        self.unlink(l);
                        runs.add(ops, l);
                    }
                }
            }
        }
        runs.finish(ops)
    }

    /// Drops every mirror with one call.
    pub fn flush_all(&mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        ops.unmap_all()?;
        for i in 0..self.n {
            let slot = self.list[i] as usize;
            self.index.remove(self.lpn[slot]);
            if let Some(h) = self.head.get_mut((self.entry[slot] & PPN_MASK) as usize) {
                *h = NONE;
            }
            self.entry[slot] = 0;
            self.next[slot] = NONE;
            self.free[self.free_n] = slot as u32;
            self.free_n += 1;
        }
        self.n = 0;
        self.large.clear();
        Ok(())
    }

    /// Drops every mirror that is not global, coalescing contiguous runs into one call.
    pub fn flush_non_global(&mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        let mut i = self.n;
        let mut runs = Runs::default();
        while i > 0 {
            i -= 1;
            let slot = self.list[i] as usize;
            if self.entry[slot] & GLOBAL != 0 {
                continue;
            }
            let lpn = self.lpn[slot];
            self.unlink(lpn);
            runs.add(ops, lpn);
        }
        runs.finish(ops)
    }

    /// Write-protects physical page `ppn`: every writable mirror becomes read-only.
    pub fn write_protect(&mut self, ops: &mut dyn MirrorOps, ppn: u64) -> Result<(), i32> {
        let Some(w) = self.wp.get_mut((ppn / 64) as usize) else {
            return Ok(());
        };
        *w |= 1 << (ppn % 64);
        let mut cur = self.head.get(ppn as usize).copied().unwrap_or(NONE);
        while cur != NONE {
            let s = (cur - 1) as usize;
            let e = self.entry[s];
            if e & WRITABLE != 0 {
                let prot = PROT_READ | if e & EXEC != 0 { PROT_EXEC } else { 0 };
                ops.protect(self.lpn[s] << 12, prot)?;
                self.entry[s] = e & !WRITABLE;
            }
            cur = self.next[s];
        }
        Ok(())
    }
}

/// Dropped pages gathered into contiguous runs: one unmap per run. Pages may come in any
/// order; a page that does not extend the current run flushes it. Every run is unmapped even
/// after an error (the record no longer holds those pages), and the first error is returned.
#[derive(Default)]
struct Runs {
    run: Option<(u64, u32)>, // (first lpn, count)
    error: Option<i32>,
}

impl Runs {
    fn add(&mut self, ops: &mut dyn MirrorOps, lpn: u64) {
        self.run = match self.run {
            Some((first, cnt)) if lpn + 1 == first => Some((lpn, cnt + 1)),
            Some((first, cnt)) if lpn == first + u64::from(cnt) => Some((first, cnt + 1)),
            Some((first, cnt)) => {
                self.unmap(ops, first, cnt);
                Some((lpn, 1))
            }
            None => Some((lpn, 1)),
        };
    }

    fn unmap(&mut self, ops: &mut dyn MirrorOps, first: u64, cnt: u32) {
        if let Err(e) = ops.unmap(first << 12, cnt) {
            self.error.get_or_insert(e);
        }
    }

    fn finish(mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        if let Some((first, cnt)) = self.run.take() {
            self.unmap(ops, first, cnt);
        }
        self.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod model_check;

#[cfg(test)]
mod tests;
