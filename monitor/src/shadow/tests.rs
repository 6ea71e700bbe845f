//! Unit tests of the mirror record through a fake mirror region.
use super::*;
use std::collections::BTreeMap;

/// The mirror region as a map of linear address → (physical address, prot).
#[derive(Default)]
pub(super) struct Fake {
    pub pages: BTreeMap<u64, (u64, i32)>,
    pub calls: usize,
}
impl MirrorOps for Fake {
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32> {
        self.calls += 1;
        self.pages.insert(lin, (phys, prot));
        Ok(())
    }
    fn unmap(&mut self, lin: u64, pages: u32) -> Result<(), i32> {
        self.calls += 1;
        for p in 0..pages {
            self.pages.remove(&(lin + u64::from(p) * 4096));
        }
        Ok(())
    }
    fn unmap_all(&mut self) -> Result<(), i32> {
        self.calls += 1;
        self.pages.clear();
        Ok(())
    }
    fn protect(&mut self, lin: u64, prot: i32) -> Result<(), i32> {
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

fn mirrored(f: &Fake) -> Vec<u64> {
    f.pages.keys().map(|k| k >> 12).collect()
}

#[test]
fn insert_invalidate_and_flushes() {
    let mut s = Shadow::new(256);
    let mut f = Fake::default();
    for l in 1..=10u64 {
        let m = small(l + 100, PROT_READ | PROT_WRITE, l % 2 == 0);
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
    for l in 100..1100u64 {
        s.insert(&mut f, l, small(l, PROT_READ, false)).unwrap();
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
    for l in [5u64, 9, 12] {
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
    base: u64,
    offsets: &[u64],
    prot: i32,
) -> (Shadow, Fake) {
    large_page_in(Shadow::new(1 << 16), size, base, offsets, prot)
}

fn large_page_in(
    mut s: Shadow,
    size: PageSize,
    base: u64,
    offsets: &[u64],
    prot: i32,
) -> (Shadow, Fake) {
    let mut f = Fake::default();
    for &o in offsets {
        let m = Mirror {
            ppn: 0x4000 + o,
            prot,
            global: false,
            size,
        };
        s.insert(&mut f, base + o, m).unwrap();
    }
    for l in [base - 1, base + u64::from(size.pages())] {
        s.insert(&mut f, l, small(0x100, PROT_READ | PROT_WRITE, false))
            .unwrap();
    }
    (s, f)
}

#[test]
fn invlpg_anywhere_in_a_large_page_drops_every_piece() {
    let rw = PROT_READ | PROT_WRITE;
    // 4 MiB pages come from 32-bit tables, 1 GiB ones from 4-level tables high up.
    for (size, base) in [
        (PageSize::Size2M, 8 * 1024),
        (PageSize::Size4M, 8 * 1024),
        (PageSize::Size1G, 0x7f00_0000_0000 >> 12),
    ] {
        let n = u64::from(size.pages());
        for prot in [rw, PROT_READ] {
            // The first, a middle and the last 4 KiB; mirrored or not themselves.
            for at in [0, 1, 5, n / 2, n - 2, n - 1] {
                let (mut s, mut f) = large_page_with_neighbours(size, base, &[1, 5, n - 2], prot);
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
fn invlpg_in_a_large_page_is_the_same_whether_regions_or_mirrors_are_walked() {
    // With fewer mirrors than the region has pages the record walks its mirrors, with more it
    // looks up each page of the region: both must drop exactly the pieces.
    let base = 0x4000_0000_0000u64 >> 12; // 2 MiB-aligned, above 4 GiB
    let pieces: Vec<u64> = (0..512).step_by(3).collect();
    let mut s = Shadow::new(1 << 16);
    let mut f = Fake::default();
    for l in 0..600u64 {
        // Many 4 KiB mirrors elsewhere: the region (512 pages) is smaller than the record.
        s.insert(&mut f, 0x10_0000 + l, small(0x200, PROT_READ, false))
            .unwrap();
    }
    let (mut many, mut fm) = large_page_in(s, PageSize::Size2M, base, &pieces, PROT_READ);
    fm.pages.extend(f.pages);
    let (mut few, mut ff) = large_page_with_neighbours(PageSize::Size2M, base, &pieces, PROT_READ);
    many.invalidate(&mut fm, base + 100).unwrap();
    few.invalidate(&mut ff, base + 100).unwrap();
    assert_eq!(many.mapped(), 600 + 2);
    assert_eq!(few.mapped(), 2);
    assert!(fm
        .pages
        .keys()
        .all(|&l| !(base..base + 512).contains(&(l >> 12))));
    assert!(ff
        .pages
        .keys()
        .all(|&l| !(base..base + 512).contains(&(l >> 12))));
}

#[test]
fn a_full_record_refuses_with_enomem_and_takes_pages_again_after_a_flush() {
    let mut s = Shadow::with_slots(64, 8);
    let mut f = Fake::default();
    for l in 0..8u64 {
        s.insert(&mut f, l << 20, small(l, PROT_READ, false))
            .unwrap();
    }
    // Replacing a page needs no new slot; a new page does.
    s.insert(&mut f, 3 << 20, small(9, PROT_READ, false))
        .unwrap();
    let calls = f.calls;
    assert_eq!(
        s.insert(&mut f, 99, small(1, PROT_READ, false)),
        Err(libc::ENOMEM)
    );
    assert_eq!(f.calls, calls, "nothing mapped on refusal");
    s.flush_all(&mut f).unwrap();
    for l in 100..108u64 {
        s.insert(&mut f, l, small(l, PROT_READ, false)).unwrap();
    }
    assert_eq!(s.mapped(), 8);
    assert_eq!(s.lookup(105), Some(small(105, PROT_READ, false)));
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
    let region = Class::Large4M.region(1024);
    assert_eq!((s.large.get(region), s.large.len()), (None, 0));
    s.insert(&mut f, 1024 + 4, piece(11)).unwrap();
    s.insert(&mut f, 1024 + 5, piece(12)).unwrap();
    s.invalidate(&mut f, 1024 + 5 + 1024).unwrap(); // the next 4 MiB region: no effect
    assert_eq!(s.large.get(region), Some(2));
    s.flush_non_global(&mut f).unwrap();
    assert_eq!(
        s.large.get(region),
        Some(2),
        "global large pieces survive a non-global flush"
    );
    s.flush_all(&mut f).unwrap();
    assert_eq!(s.large.len(), 0);
}
