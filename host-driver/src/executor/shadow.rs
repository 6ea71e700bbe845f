//! The record of mirrored guest pages: linear page → physical page with flags, a list of
//! mapped pages (for flushes) and per-physical-page reverse chains (for write-protection).
//! All tables are allocated once at setup; no operation allocates.

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
const PPN_MASK: u64 = (1 << 40) - 1;
const NPAGES: usize = 1 << 20;

/// Protection bits (as mmap's PROT_*).
pub const PROT_READ: i32 = 1;
/// PROT_WRITE
pub const PROT_WRITE: i32 = 2;
/// PROT_EXEC
pub const PROT_EXEC: i32 = 4;

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
        }
    }

    /// Number of mirrored pages.
    #[cfg(test)]
    pub fn mapped(&self) -> usize {
        self.n
    }

    /// The physical page mirrored at linear page number `lpn`, if any.
    #[cfg(test)]
    pub fn lookup(&self, lpn: u32) -> Option<(u64, bool)> {
        let e = *self.entries.get(lpn as usize)?;
        (e & VALID != 0).then_some((e & PPN_MASK, e & WRITABLE != 0))
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
        self.entries[lpn as usize] = 0;
    }

    /// Mirrors `ppn` at `lpn`.
    pub fn insert(
        &mut self,
        ops: &mut dyn MirrorOps,
        lpn: u32,
        ppn: u64,
        prot: i32,
        global: bool,
    ) -> Result<(), i32> {
        ops.map(lpn << 12, ppn << 12, prot)?;
        self.unlink(lpn);
        let mut e = VALID | (ppn & PPN_MASK);
        if prot & PROT_WRITE != 0 {
            e |= WRITABLE;
        }
        if prot & PROT_EXEC != 0 {
            e |= EXEC;
        }
        if global {
            e |= GLOBAL;
        }
        self.entries[lpn as usize] = e;
        self.list[self.n] = lpn;
        self.pos[lpn as usize] = self.n as u32;
        self.n += 1;
        if let Some(h) = self.head.get_mut(ppn as usize) {
            self.next[lpn as usize] = *h;
            *h = lpn + 1;
        }
        Ok(())
    }

    /// Drops the mirror of `lpn` (INVLPG).
    pub fn invalidate(&mut self, ops: &mut dyn MirrorOps, lpn: u32) -> Result<(), i32> {
        if self
            .entries
            .get(lpn as usize)
            .is_some_and(|e| e & VALID != 0)
        {
            self.unlink(lpn);
            ops.unmap(lpn << 12, 1)?;
        }
        Ok(())
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
        Ok(())
    }

    /// Drops every mirror that is not global, coalescing contiguous runs into one call.
    pub fn flush_non_global(&mut self, ops: &mut dyn MirrorOps) -> Result<(), i32> {
        let mut i = self.n;
        let mut run: Option<(u32, u32)> = None; // (first lpn, count), descending discovery
        let mut result = Ok(());
        while i > 0 {
            i -= 1;
            let lpn = self.list[i];
            if self.entries[lpn as usize] & GLOBAL != 0 {
                continue;
            }
            self.unlink(lpn);
            run = match run {
                Some((first, cnt)) if lpn + 1 == first => Some((lpn, cnt + 1)),
                Some((first, cnt)) if lpn == first + cnt => Some((first, cnt + 1)),
                Some((first, cnt)) => {
                    if let Err(e) = ops.unmap(first << 12, cnt) {
                        result = Err(e);
                    }
                    Some((lpn, 1))
                }
                None => Some((lpn, 1)),
            };
        }
        if let Some((first, cnt)) = run {
            ops.unmap(first << 12, cnt)?;
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Fake {
        pages: BTreeMap<u32, (u64, i32)>,
        calls: usize,
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

    #[test]
    fn insert_invalidate_and_flushes() {
        let mut s = Shadow::new(256);
        let mut f = Fake::default();
        for l in 1..=10u32 {
            s.insert(
                &mut f,
                l,
                u64::from(l) + 100,
                PROT_READ | PROT_WRITE,
                l % 2 == 0,
            )
            .unwrap();
        }
        assert_eq!(s.mapped(), 10);
        assert_eq!(s.lookup(3), Some((103, true)));
        s.invalidate(&mut f, 3).unwrap();
        assert_eq!(s.lookup(3), None);
        assert!(!f.pages.contains_key(&(3 << 12)));
        s.flush_non_global(&mut f).unwrap();
        let left: Vec<u32> = f.pages.keys().map(|k| k >> 12).collect();
        assert_eq!(left, vec![2, 4, 6, 8, 10]);
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
            s.insert(&mut f, l, u64::from(l), PROT_READ, false).unwrap();
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
        for l in [5u32, 9, 12] {
            s.insert(&mut f, l, 7, PROT_READ | PROT_WRITE | PROT_EXEC, false)
                .unwrap();
        }
        s.insert(&mut f, 6, 8, PROT_READ | PROT_WRITE, false)
            .unwrap();
        s.invalidate(&mut f, 9).unwrap();
        s.write_protect(&mut f, 7).unwrap();
        assert!(s.is_wp(7) && !s.is_wp(8));
        assert_eq!(f.pages[&(5 << 12)].1, PROT_READ | PROT_EXEC);
        assert_eq!(f.pages[&(12 << 12)].1, PROT_READ | PROT_EXEC);
        assert_eq!(f.pages[&(6 << 12)].1, PROT_READ | PROT_WRITE);
        assert_eq!(s.lookup(5), Some((7, false)));
        s.clear_wp(7);
        assert!(!s.is_wp(7));
        // Remapping a linear page to another physical page unlinks it from the old chain.
        s.insert(&mut f, 5, 8, PROT_READ | PROT_WRITE, false)
            .unwrap();
        s.write_protect(&mut f, 7).unwrap();
        assert_eq!(f.pages[&(5 << 12)].1, PROT_READ | PROT_WRITE);
    }
}
