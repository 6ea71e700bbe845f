//! The record of mirrored guest pages: linear page → physical page with flags, a list of
//! mapped pages (for flushes) and per-physical-page reverse chains (for write-protection).
//! All tables are allocated once at setup; no operation allocates.
//!
//! The mirror behaves like a TLB, and a guest large page (PSE 4 MiB, PAE 2 MiB) is one
//! translation even though it is mirrored in 4 KiB pieces as they are touched: an INVLPG of any
//! address in it drops every piece (the guest kernel changes a large mapping with one INVLPG per
//! 2/4 MiB, and a piece left behind would keep freed memory reachable). Each entry therefore
//! records the size of the page it came from, and per-2 MiB counts of such pieces keep the
//! common INVLPG, where no large page is near, a single lookup.

use guest_paging::{PageSize, Translation};

/// Mapping operations on the mirror region (the executor's mmap wrappers, or a fake in tests).
pub trait MirrorOps {
    /// Maps `phys` at `lin` with `prot`.
    fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32>;
    /// Returns `[lin, lin + pages*4K)` to the reservation.
    fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32>;
    /// Returns the whole mirror region to the reservation.
    fn unmap_all(&mut self) -> Result<(), i32>;
    /// Changes the protection of one page.
    fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32>;
}

const VALID: u64 = 1 << 63;
const WRITABLE: u64 = 1 << 62;
const GLOBAL: u64 = 1 << 61;
const EXEC: u64 = 1 << 60;
/// The entry is a piece of a PAE 2 MiB page.
const PIECE_2M: u64 = 1 << 59;
/// The entry is a piece of a 4 MiB page.
const PIECE_4M: u64 = 1 << 58;
const PPN_MASK: u64 = (1 << 40) - 1;
const NPAGES: usize = 1 << 20;
/// 4 KiB pages per 2 MiB chunk, the unit of the large-piece counts.
const CHUNK_PAGES: u32 = 512;

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

/// The mirror record.
#[derive(Debug)]
pub struct Shadow {
    entries: Box<[u64]>,
    next: Box<[u32]>,
    pos: Box<[u32]>,
    list: Box<[u32]>,
    n: usize,
    head: Box<[u32]>,
    wp: Box<[u64]>,
    /// Per 2 MiB of linear space: how many entries there are pieces of a large page.
    large: Box<[u16]>,
}

impl Shadow {
    /// Tables for `ram_pages` physical pages.
    pub fn new(ram_pages: usize) -> Self {
        Shadow {
            entries: vec![0u64; NPAGES].into_boxed_slice(),
            next: vec![0u32; NPAGES].into_boxed_slice(),
            pos: vec![0u32; NPAGES].into_boxed_slice(),
            list: vec![0u32; NPAGES].into_boxed_slice(),
            n: 0,
            head: vec![0u32; ram_pages].into_boxed_slice(),
            wp: vec![0u64; ram_pages.div_ceil(64)].into_boxed_slice(),
            large: vec![0u16; NPAGES / CHUNK_PAGES as usize].into_boxed_slice(),
        }
    }

    /// Number of mirrored pages.
    #[cfg(test)]
    pub fn mapped(&self) -> usize {
        self.n
    }

    /// The mirror at linear page number `lpn`, if any.
    pub fn lookup(&self, lpn: u32) -> Option<Mirror> {
        let e = *self.entries.get(lpn as usize)?;
        (e & VALID != 0).then(|| Mirror {
            ppn: e & PPN_MASK,
            prot: PROT_READ
                | if e & WRITABLE != 0 { PROT_WRITE } else { 0 }
                | if e & EXEC != 0 { PROT_EXEC } else { 0 },
            global: e & GLOBAL != 0,
            size: piece_size(e),
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

    fn unlink(&mut self, lpn: u32) {
        let e = self.entries[lpn as usize];
        if e & VALID == 0 {
            return;
        }
        let ppn = (e & PPN_MASK) as usize;
        // Reverse chain.
        let me = lpn + 1;
        if let Some(h) = self.head.get(ppn).copied() {
            if h == me {
                self.head[ppn] = self.next[lpn as usize];
            } else {
                let mut cur = h;
                while cur != 0 {
                    let nx = self.next[(cur - 1) as usize];
                    if nx == me {
                        self.next[(cur - 1) as usize] = self.next[lpn as usize];
                        break;
                    }
                    cur = nx;
                }
            }
        }
        self.next[lpn as usize] = 0;
        // List (swap-remove).
        let i = self.pos[lpn as usize] as usize;
        let last = self.list[self.n - 1];
        self.list[i] = last;
        self.pos[last as usize] = i as u32;
        self.n -= 1;
        if e & (PIECE_2M | PIECE_4M) != 0 {
            self.large[(lpn / CHUNK_PAGES) as usize] -= 1;
        }
        self.entries[lpn as usize] = 0;
    }

    /// Mirrors `m` at `lpn`.
    pub fn insert(&mut self, ops: &mut dyn MirrorOps, lpn: u32, m: Mirror) -> Result<(), i32> {
        let piece = match m.size {
            PageSize::Size4K => 0,
            PageSize::Size2M => PIECE_2M,
            PageSize::Size4M => PIECE_4M,
            // Only the 4-level walker makes 1 GiB pages, and this record serves 32-bit
            // tables: a piece whose INVLPG it could not honour (it drops at most a 4 MiB
            // region) is never mirrored; the caller then has the emulator do the access.
            PageSize::Size1G => return Err(libc::EINVAL),
        };
        ops.map(lpn << 12, m.ppn << 12, m.prot)?;
        self.unlink(lpn);
        let mut e = VALID | piece | (m.ppn & PPN_MASK);
        if m.prot & PROT_WRITE != 0 {
            e |= WRITABLE;
        }
        if m.prot & PROT_EXEC != 0 {
            e |= EXEC;
        }
        if m.global {
            e |= GLOBAL;
        }
        if e & (PIECE_2M | PIECE_4M) != 0 {
            self.large[(lpn / CHUNK_PAGES) as usize] += 1;
        }
        self.entries[lpn as usize] = e;
        self.list[self.n] = lpn;
        self.pos[lpn as usize] = self.n as u32;
        self.n += 1;
        if let Some(h) = self.head.get_mut(m.ppn as usize) {
            self.next[lpn as usize] = *h;
            *h = lpn + 1;
        }
        Ok(())
    }

    /// INVLPG of linear page `lpn`: drops its mirror and, when it lies in a guest large page,
    /// every mirrored piece of that page.
    pub fn invalidate(&mut self, ops: &mut dyn MirrorOps, lpn: u32) -> Result<(), i32> {
        let Some(&e) = self.entries.get(lpn as usize) else {
            return Ok(());
        };
        let mut runs = Runs::default();
        if e & VALID != 0 {
            self.unlink(lpn);
            runs.add(ops, lpn);
        }
        // A 4 MiB page spans two 2 MiB chunks; its pieces can be in either.
        let chunk = lpn / CHUNK_PAGES;
        let pair = (chunk & !1) as usize;
        if self.large[pair] != 0 || self.large[pair + 1] != 0 {
            let first = lpn & !(PageSize::Size4M.pages() - 1);
            for l in first..first + PageSize::Size4M.pages() {
                let e = self.entries[l as usize];
                let covers = e & PIECE_4M != 0 || (e & PIECE_2M != 0 && l / CHUNK_PAGES == chunk);
                if covers {
                    self.unlink(l);
                    runs.add(ops, l);
                }
            }
        }
        runs.finish(ops)
    }

    /// Drops every mirror with one call.
    pub fn flush_all(&mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        ops.unmap_all()?;
        for i in 0..self.n {
            let lpn = self.list[i] as usize;
            let ppn = (self.entries[lpn] & PPN_MASK) as usize;
            if let Some(h) = self.head.get_mut(ppn) {
                *h = 0;
            }
            self.entries[lpn] = 0;
            self.next[lpn] = 0;
        }
        self.n = 0;
        self.large.fill(0);
        Ok(())
    }

    /// Drops every mirror that is not global, coalescing contiguous runs into one call.
    pub fn flush_non_global(&mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        let mut i = self.n;
        let mut runs = Runs::default();
        while i > 0 {
            i -= 1;
            let lpn = self.list[i];
            if self.entries[lpn as usize] & GLOBAL != 0 {
                continue;
            }
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
        let mut cur = self.head.get(ppn as usize).copied().unwrap_or(0);
        while cur != 0 {
            let lpn = cur - 1;
            let e = self.entries[lpn as usize];
            if e & WRITABLE != 0 {
                let prot = PROT_READ | if e & EXEC != 0 { PROT_EXEC } else { 0 };
                ops.protect(lpn << 12, prot)?;
                self.entries[lpn as usize] = e & !WRITABLE;
            }
            cur = self.next[lpn as usize];
        }
        Ok(())
    }
}

fn piece_size(e: u64) -> PageSize {
    if e & PIECE_4M != 0 {
        PageSize::Size4M
    } else if e & PIECE_2M != 0 {
        PageSize::Size2M
    } else {
        PageSize::Size4K
    }
}

/// Dropped pages gathered into contiguous runs: one unmap per run. Pages may come in any
/// order; a page that does not extend the current run flushes it. Every run is unmapped even
/// after an error (the record no longer holds those pages), and the first error is returned.
#[derive(Default)]
struct Runs {
    run: Option<(u32, u32)>, // (first lpn, count)
    error: Option<i32>,
}

impl Runs {
    fn add(&mut self, ops: &mut dyn MirrorOps, lpn: u32) {
        self.run = match self.run {
            Some((first, cnt)) if lpn + 1 == first => Some((lpn, cnt + 1)),
            Some((first, cnt)) if lpn == first + cnt => Some((first, cnt + 1)),
            Some((first, cnt)) => {
                self.unmap(ops, first, cnt);
                Some((lpn, 1))
            }
            None => Some((lpn, 1)),
        };
    }

    fn unmap(&mut self, ops: &mut dyn MirrorOps, first: u32, cnt: u32) {
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
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The mirror region as a map of linear address → (physical address, prot).
    #[derive(Default)]
    pub(super) struct Fake {
        pub pages: BTreeMap<u32, (u64, i32)>,
        pub calls: usize,
    }
    impl MirrorOps for Fake {
        fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32> {
            self.calls += 1;
            self.pages.insert(lin, (phys, prot));
            Ok(())
        }
        fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32> {
            self.calls += 1;
            for p in 0..pages {
                self.pages.remove(&(lin + p * 4096));
            }
            Ok(())
        }
        fn unmap_all(&mut self) -> Result<(), i32> {
            self.calls += 1;
            self.pages.clear();
            Ok(())
        }
        fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32> {
            self.calls += 1;
            self.pages.get_mut(&lin).unwrap().1 = prot;
            Ok(())
        }
    }

    fn small(ppn: u64, prot: i32, global: bool) -> Mirror {
        Mirror {
            ppn,
            prot,
            global,
            size: PageSize::Size4K,
        }
    }

    fn mirrored(f: &Fake) -> Vec<u32> {
        f.pages.keys().map(|k| k >> 12).collect()
    }

    #[test]
    fn insert_invalidate_and_flushes() {
        let mut s = Shadow::new(256);
        let mut f = Fake::default();
        for l in 1..=10u32 {
            let m = small(u64::from(l) + 100, PROT_READ | PROT_WRITE, l % 2 == 0);
            s.insert(&mut f, l, m).unwrap();
        }
        assert_eq!(s.mapped(), 10);
        assert_eq!(s.lookup(3), Some(small(103, PROT_READ | PROT_WRITE, false)));
        s.invalidate(&mut f, 3).unwrap();
        assert_eq!(s.lookup(3), None);
        assert!(!f.pages.contains_key(&(3 << 12)));
        s.flush_non_global(&mut f).unwrap();
        assert_eq!(mirrored(&f), vec![2, 4, 6, 8, 10]);
        assert_eq!(s.mapped(), 5);
        s.flush_all(&mut f).unwrap();
        assert_eq!(s.mapped(), 0);
        assert!(f.pages.is_empty());
        assert_eq!(s.lookup(2), None);
    }

    #[test]
    fn flush_non_global_coalesces_runs() {
        let mut s = Shadow::new(2048);
        let mut f = Fake::default();
        for l in 100..1100u32 {
            s.insert(&mut f, l, small(u64::from(l), PROT_READ, false))
                .unwrap();
        }
        f.calls = 0;
        s.flush_non_global(&mut f).unwrap();
        assert_eq!(f.calls, 1, "one contiguous run → one unmap");
        assert!(f.pages.is_empty());
    }

    #[test]
    fn write_protect_follows_reverse_chain() {
        let mut s = Shadow::new(256);
        let mut f = Fake::default();
        // Three linear pages alias physical page 7; one other page.
        let rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
        for l in [5u32, 9, 12] {
            s.insert(&mut f, l, small(7, rwx, false)).unwrap();
        }
        s.insert(&mut f, 6, small(8, PROT_READ | PROT_WRITE, false))
            .unwrap();
        s.invalidate(&mut f, 9).unwrap();
        s.write_protect(&mut f, 7).unwrap();
        assert!(s.is_wp(7) && !s.is_wp(8));
        assert_eq!(f.pages[&(5 << 12)].1, PROT_READ | PROT_EXEC);
        assert_eq!(f.pages[&(12 << 12)].1, PROT_READ | PROT_EXEC);
        assert_eq!(f.pages[&(6 << 12)].1, PROT_READ | PROT_WRITE);
        assert_eq!(s.lookup(5), Some(small(7, PROT_READ | PROT_EXEC, false)));
        s.clear_wp(7);
        assert!(!s.is_wp(7));
        // Remapping a linear page to another physical page unlinks it from the old chain.
        s.insert(&mut f, 5, small(8, PROT_READ | PROT_WRITE, false))
            .unwrap();
        s.write_protect(&mut f, 7).unwrap();
        assert_eq!(f.pages[&(5 << 12)].1, PROT_READ | PROT_WRITE);
    }

    /// Mirrors pieces `offsets` of a large page of `size` at linear page `base` (aligned),
    /// physical page `ppn` onwards, with `prot`; plus 4 KiB mirrors right around it.
    fn large_page_with_neighbours(
        size: PageSize,
        base: u32,
        offsets: &[u32],
        prot: i32,
    ) -> (Shadow, Fake) {
        let mut s = Shadow::new(1 << 16);
        let mut f = Fake::default();
        for &o in offsets {
            let m = Mirror {
                ppn: 0x4000 + u64::from(o),
                prot,
                global: false,
                size,
            };
            s.insert(&mut f, base + o, m).unwrap();
        }
        for l in [base - 1, base + size.pages()] {
            s.insert(&mut f, l, small(0x100, PROT_READ | PROT_WRITE, false))
                .unwrap();
        }
        (s, f)
    }

    #[test]
    fn invlpg_anywhere_in_a_large_page_drops_every_piece() {
        let rw = PROT_READ | PROT_WRITE;
        for size in [PageSize::Size2M, PageSize::Size4M] {
            let n = size.pages();
            let base = 8 * 1024; // 32 MiB: aligned for both sizes
            for prot in [rw, PROT_READ] {
                // The first, a middle and the last 4 KiB; mirrored or not themselves.
                for at in [0, 1, 5, n / 2, n - 2, n - 1] {
                    let (mut s, mut f) =
                        large_page_with_neighbours(size, base, &[1, 5, n - 2], prot);
                    s.invalidate(&mut f, base + at).unwrap();
                    assert_eq!(
                        mirrored(&f),
                        vec![base - 1, base + n],
                        "{size:?} prot {prot} INVLPG at piece {at}"
                    );
                    assert_eq!(s.mapped(), 2);
                    assert!(s.lookup(base + 1).is_none() && s.lookup(base + n - 2).is_none());
                }
            }
        }
    }

    #[test]
    fn invlpg_beside_a_large_page_keeps_it() {
        let (mut s, mut f) = large_page_with_neighbours(PageSize::Size2M, 8 * 1024, &[1, 7], 1);
        // The other 2 MiB half of the same 4 MiB region, and the neighbours.
        s.invalidate(&mut f, 8 * 1024 + 512 + 3).unwrap();
        s.invalidate(&mut f, 8 * 1024 - 1).unwrap();
        assert_eq!(
            mirrored(&f),
            vec![8 * 1024 + 1, 8 * 1024 + 7, 8 * 1024 + 512]
        );
    }

    #[test]
    fn a_1gib_piece_is_never_mirrored() {
        // Only the 4-level walker makes them; the record could not drop one on INVLPG.
        let mut s = Shadow::new(1 << 16);
        let mut f = Fake::default();
        let m = Mirror {
            ppn: 9,
            prot: PROT_READ,
            global: false,
            size: PageSize::Size1G,
        };
        assert_eq!(s.insert(&mut f, 3, m), Err(libc::EINVAL));
        assert_eq!((s.mapped(), f.calls), (0, 0));
        assert!(s.lookup(3).is_none());
    }

    #[test]
    fn large_piece_counts_follow_replacement_and_flushes() {
        let mut s = Shadow::new(1 << 16);
        let mut f = Fake::default();
        let piece = |ppn| Mirror {
            ppn,
            prot: PROT_READ,
            global: true,
            size: PageSize::Size4M,
        };
        s.insert(&mut f, 1024 + 3, piece(9)).unwrap();
        // The guest split the large page: the same linear page now a 4 KiB translation.
        s.insert(&mut f, 1024 + 3, small(10, PROT_READ, false))
            .unwrap();
        assert_eq!(s.large[2] + s.large[3], 0);
        s.insert(&mut f, 1024 + 4, piece(11)).unwrap();
        s.flush_non_global(&mut f).unwrap();
        assert_eq!(
            s.large[2], 1,
            "a global large piece survives a non-global flush"
        );
        s.flush_all(&mut f).unwrap();
        assert!(s.large.iter().all(|&c| c == 0));
    }
}
