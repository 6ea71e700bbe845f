//! Generated seed corpora: valid, meaningful cases from which the fuzzer mutates (written by
//! `fuzz-seeds DIR`, run by `ci/fuzz` before each target; the regression tests run them too).

use crate::control_region::{Body, RegionCase, Setup, HEADER_LEN};
use crate::decoder::{DecoderCase, FetchCase};
use crate::walker::{EntrySpec, WalkCase};
use crate::walker64::Walk64Case;
use host_driver::fuzzing::exec_area_bytes;

/// A small deterministic generator (xorshift64*), so that the seeds are the same every run.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

const PRESENT_USER_RW: u64 = 0x7;

fn walker_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut rng = Rng::new(1);
    // Every paging mode, access kind and A/D choice, over present user writable tables:
    // 4 KiB pages, then large pages (PS in the directory entry), then NX and reserved bits.
    for paging in [0u8, 0x1, 0x1 | 0x4, 0x1 | 0x2, 0x1 | 0x2 | 0x10] {
        for access in 0..3u8 {
            for update_ad in [0u8, 0x20] {
                for variant in 0..4u64 {
                    let pae = paging & 0x2 != 0;
                    let mut levels = [
                        EntrySpec::to_page(1, if pae { 1 } else { PRESENT_USER_RW }),
                        EntrySpec::to_page(2, PRESENT_USER_RW),
                        EntrySpec::to_page(3, PRESENT_USER_RW),
                    ];
                    let (large, last) = if pae { (1, 2) } else { (0, 1) };
                    match variant {
                        1 => levels[large].raw |= 0x80 | 0x100, // large, global
                        2 => levels[last].raw &= !2,            // read-only final entry
                        3 if pae => levels[2].raw |= 1 << 63,   // NX
                        3 => levels[1].raw &= !4,               // supervisor page
                        _ => {}
                    }
                    let case = WalkCase {
                        mode: paging | 0x8 | update_ad | (access << 6),
                        cmpxchg_failures: if variant == 0 { 1 } else { 0 },
                        linear: 0x0804_8000 | (rng.next_u64() as u32 & 0xfff),
                        cr3: 0,
                        cr3_place: 0,
                        levels,
                        background: vec![],
                    };
                    out.push(case.encode());
                }
            }
        }
    }
    out
}

/// 4-level cases: every access, A/D choice and NXE setting over user writable tables (PML4 in
/// RAM page 0, then pages 1 to 4), each with one twist: a large page, a denial, NX, a
/// reserved bit, a missing entry, a non-canonical address, CR3's ignored bits, a table
/// outside RAM.
fn walker64_seeds() -> Vec<Vec<u8>> {
    const PS: u64 = 0x80;
    const G: u64 = 0x100;
    let mut out = vec![];
    let mut rng = Rng::new(4);
    let raw = |v: u64| EntrySpec {
        raw: v,
        place: 0x80,
    };
    for access in 0..3u8 {
        for update_ad in [0u8, 0x10] {
            for nxe in [0u8, 1] {
                for variant in 0..14u64 {
                    let mut levels = [1, 2, 3, 4].map(|p| EntrySpec::to_page(p, PRESENT_USER_RW));
                    let level = (rng.next_u64() % 4) as usize;
                    let mut mode = nxe | 0x2 | update_ad | (access << 5);
                    let mut cr3 = 0;
                    let mut linear = if rng.next_u64() & 1 == 0 {
                        0x0000_7f12_3456_7000
                    } else {
                        0xffff_8812_3456_7000
                    };
                    linear |= rng.next_u64() & 0xfff;
                    match variant {
                        1 => levels[2] = raw(0x0020_0000 | PS | G | PRESENT_USER_RW),
                        2 => levels[1] = raw(0x4000_0000 | PS | G | PRESENT_USER_RW),
                        3 => levels[3].raw &= !2,
                        4 => levels[level].raw &= !4,
                        5 => levels[level].raw |= 1 << 63,
                        6 => levels[level].raw |= 1 << 51,
                        7 => levels[0].raw |= PS,
                        8 => levels[1] = raw(0x4000_0000 | 1 << 21 | PS | PRESENT_USER_RW),
                        9 => levels[2] = raw(0x0020_0000 | 1 << 13 | PS | PRESENT_USER_RW),
                        10 => {
                            mode |= 0x80;
                            linear ^= 1 << 47;
                        }
                        11 => levels[level].raw &= !1,
                        12 => {
                            mode |= 0x4 | 0x8; // PCIDE, SMEP
                            cr3 = 1 << 63 | 1 << 45 | 0xabc;
                        }
                        13 => levels[level.min(2)] = raw(0x0010_0000 | PRESENT_USER_RW),
                        _ => {}
                    }
                    let case = Walk64Case {
                        mode,
                        cmpxchg_failures: match variant {
                            0 if nxe == 1 => 255,
                            0 => 2,
                            _ => 0,
                        },
                        maxphyaddr: [8, 20, 4, 0xff][(variant % 4) as usize],
                        linear,
                        cr3,
                        cr3_place: 0,
                        levels,
                        background: vec![],
                    };
                    out.push(case.encode());
                }
            }
        }
    }
    out
}

/// Instruction bytes behind #GP exits, and a few that are not.
const INSTRUCTIONS: &[(&[u8], u32)] = &[
    (&[0xf4], 0),
    (&[0xfa], 0),
    (&[0xfb], 0),
    (&[0xe6, 0x80], 0),
    (&[0xec], 0),
    (&[0x66, 0xef], 0),
    (&[0xf3, 0x6c], 0),
    (&[0x0f, 0x31], 0),
    (&[0x0f, 0x01, 0xf9], 0),
    (&[0x0f, 0x01, 0x10], 0),
    (&[0x0f, 0x22, 0xd8], 0),
    (&[0x0f, 0x30], 0),
    (&[0x0f, 0x00, 0xd0], 0),
    (&[0x8e, 0xd8], 0x28),
    (&[0x1f], 0x28),
    (&[0x0f, 0xa1], 0x28),
    (&[0x0f, 0xb2, 0x00], 0x28),
    (&[0xc5, 0x00], 0x28),
    (&[0xea, 0, 0, 0, 0, 0x33, 0], 0x30),
    (&[0x9a, 0, 0, 0, 0, 0x23, 0], 0x20),
    (&[0xff, 0x18], 0x30),
    (&[0xff, 0x28], 0x30),
    (&[0xcb], 0),
    (&[0xcf], 0),
    (&[0xcd, 0x80], 0x402),
    (&[0xcd, 0x21], 0),
    (&[0x8b, 0x00], 0),
    (&[0x65, 0xa1, 0x14, 0, 0, 0], 0),
];

fn decoder_seeds() -> Vec<Vec<u8>> {
    // Each instruction as 32- and as 64-bit code.
    let mut out: Vec<Vec<u8>> = INSTRUCTIONS
        .iter()
        .flat_map(|&(b, ec)| {
            [false, true].map(|code64| {
                DecoderCase::Classify {
                    error_code: ec,
                    code64,
                    bytes: b.to_vec(),
                }
                .encode()
            })
        })
        .collect();
    // The same instructions at CS:EIP, in 32- and 16-bit code, under both paging modes, at
    // the end of a page so that longer ones cross into the next page.
    for (i, &(b, _)) in INSTRUCTIONS.iter().enumerate() {
        let pae = i % 2 == 1;
        let mut code = [0x90u8; 15];
        code[..b.len()].copy_from_slice(b);
        let spec = |page: u8| {
            if pae {
                [
                    EntrySpec::to_page(1, 1),
                    EntrySpec::to_page(2, PRESENT_USER_RW),
                    EntrySpec::to_page(page, PRESENT_USER_RW),
                ]
            } else {
                [
                    EntrySpec::to_page(2, PRESENT_USER_RW),
                    EntrySpec::to_page(page, PRESENT_USER_RW),
                    EntrySpec::default(),
                ]
            }
        };
        let case = FetchCase {
            mode: 0x1 | if pae { 0x2 | 0x10 } else { 0 },
            cr3: 0,
            cr3_place: 0,
            cs_base: if i % 3 == 0 { 0x1000 } else { 0 },
            cs_flags: u8::from(i % 4 != 3),
            eip: 0x0804_8000 + 0xffc - (i as u32 % 4),
            first: spec(4),
            second: spec(5),
            code,
            background: vec![],
        };
        out.push(DecoderCase::Fetch(Box::new(case)).encode());
    }
    out
}

fn control_region_seeds() -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut rng = Rng::new(3);
    let mut made = 0;
    // Most random headers give a runnable entry state; the bound keeps a generator that finds
    // none (a broken `from_header`) from looping: the seeds test then reports too few seeds.
    for _ in 0..1000 {
        if made == 48 {
            break;
        }
        let header = rng.bytes(HEADER_LEN);
        let Some(setup) = Setup::from_header(&header) else {
            continue;
        };
        made += 1;
        // The honest record, as patches (none) and, for some, as raw bytes.
        out.push(
            RegionCase {
                header: header.clone(),
                body: Body::Patches(vec![]),
            }
            .encode(),
        );
        if made % 4 == 0 {
            out.push(
                RegionCase {
                    header,
                    body: Body::Raw(exec_area_bytes(&setup.honest)),
                }
                .encode(),
            );
        }
    }
    out
}

/// Honest pages for 32-bit and 64-bit entries and each signal kind (as patches: none), some
/// with one patch in each region, some as raw bytes.
fn stub_region_seeds() -> Vec<Vec<u8>> {
    use crate::stub_region::{self as sr, StubCase};
    let mut out = vec![];
    let mut rng = Rng::new(4);
    let mut made = 0;
    for _ in 0..2000 {
        if made == 48 {
            break;
        }
        let mut header = rng.bytes(sr::HEADER_LEN);
        // Alternate 32-bit and 64-bit entries, and the four signal kinds.
        let tail = crate::control_region::HEADER_LEN;
        header[tail] = made as u8 & 1;
        let Some((setup, _)) = sr::Setup::from_header(&header) else {
            continue;
        };
        made += 1;
        let body = match made % 4 {
            0 => sr::Body::Raw(setup.honest[..0x100].to_vec()),
            1 => sr::Body::Patches(vec![(made as u8 % 5, rng.next_u64() as u16, vec![0x41])]),
            _ => sr::Body::Patches(vec![]),
        };
        out.push(StubCase { header, body }.encode());
    }
    out
}

/// The seeds of `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "walker" => walker_seeds(),
        "walker64" => walker64_seeds(),
        "decoder" => decoder_seeds(),
        "control_region" => control_region_seeds(),
        "stub_region" => stub_region_seeds(),
        other => panic!("unknown fuzz target {other:?}"),
    }
}
