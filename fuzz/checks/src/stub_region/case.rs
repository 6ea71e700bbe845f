//! Stub-region cases: the header that builds an entry state (32-bit, or 64-bit in long mode),
//! what the library knows of the run and the signal an honest stub publishes ([`Setup`]), and
//! the pages an input makes of them ([`StubCase`]).

use crate::control_region::case::Setup as RegionSetup;
use crate::{encode_case, parse_case, read_patch_bytes, write_patch_bytes, Patch, Reader, Writer};
use host_driver::fuzzing::{HonestSignal, StubRun, StubRunContext, STUB_PAGES_LEN};
use host_driver::{DriverError, GuestState};
use plex86_protocol::stub::{by_stub, DEFAULT_BASE, STUB};
use plex86_protocol::{seg, EFER_LMA};

/// Bytes of the header at the start of an input: control_region's header (the 32-bit entry
/// state), then the 64-bit part and the run.
pub const HEADER_LEN: usize = crate::control_region::HEADER_LEN + 64;

const EFER_LME: u64 = 1 << 8;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const ATTR_L: u16 = 1 << 13;
const ATTR_DB: u16 = 1 << 14;

/// The parts of a case that the header describes.
#[derive(Debug)]
pub struct Setup {
    /// The state the run was entered with.
    pub entry: GuestState,
    /// What the library knows when the signal arrives.
    pub ctx: StubRunContext,
    /// The signal the honest pages carry.
    pub signal: HonestSignal,
    /// The pages an honest stub leaves for it.
    pub honest: Vec<u8>,
}

/// An address with bits 63:47 copies of bit 47.
fn canonical(v: u64) -> u64 {
    (((v << 16) as i64) >> 16) as u64
}

/// Makes the 32-bit `entry` 64-bit code in long mode: a 64-bit CS, paging with PAE, full
/// registers and canonical RIP and FS/GS bases from `r`.
fn long_mode(entry: &mut GuestState, r: &mut Reader<'_>) {
    let cs = &mut entry.segs[seg::CS];
    cs.attr = (cs.attr & !ATTR_DB) | ATTR_L;
    entry.efer |= EFER_LME | EFER_LMA;
    entry.cr0 |= CR0_PG;
    entry.cr4 = (entry.cr4 | CR4_PAE) & !CR4_LA57;
    let upper = r.u64();
    for (i, g) in entry.gprs.iter_mut().enumerate() {
        *g |= upper.rotate_left(8 * i as u32) << 32;
    }
    entry.rip = canonical(r.u64());
    for i in [seg::FS, seg::GS] {
        entry.segs[i].base = canonical(r.u64());
    }
}

impl Setup {
    /// Builds a case's setup from a header, with the run entered; `None` when the entry state
    /// is not one the stub executor runs (then there is nothing to run).
    pub fn from_header(header: &[u8]) -> Option<(Setup, StubRun)> {
        let (region, rest) = header.split_at(crate::control_region::HEADER_LEN.min(header.len()));
        let region = RegionSetup::from_header(region)?;
        let mut r = Reader::new(rest);
        let mut entry = region.entry;
        let code64 = r.u8() & 1 != 0;
        if code64 {
            long_mode(&mut entry, &mut r);
        } else {
            // (the 64-bit part is read anyway: the bytes after it mean the same either way)
            for _ in 0..4 {
                r.u64();
            }
        }
        // S anywhere it may lie (2 MiB-aligned, in a 4 GiB block of its own above 4 GiB).
        let block = u64::from(r.u16() % 0x7ffe) + 1;
        let base = if block == 1 {
            DEFAULT_BASE
        } else {
            (block << 32) | (u64::from(r.u16() % 2048) << 21)
        };
        // (at least 1 ns, as `StubExecutor::run` makes it)
        let budget_ns = (r.u64() >> (24 + r.u8() % 40)).max(1);
        let posted_ns = 1 + (r.u64() >> 2);
        let kind = r.u8();
        let signal = match kind % 4 {
            0 => HonestSignal::BudgetTimer,
            1 => HonestSignal::Backstop,
            2 => {
                let a = r.u64();
                HonestSignal::PageFault {
                    linear: if code64 {
                        canonical(a)
                    } else {
                        a & 0xffff_ffff
                    },
                    write: kind & 0x10 != 0,
                }
            }
            _ => HonestSignal::InvalidOpcode,
        };
        // The signal comes when the budget is spent for a SIGALRM, else at any time.
        let spent = if kind % 4 < 2 { budget_ns } else { 0 };
        let now_ns = posted_ns + spent + u64::from(r.u32());
        let fill = r.u32();
        let flags = r.u8();
        let ctx = StubRunContext {
            base,
            xsave: region.ctx.xsave,
            ram_size: (u64::from(r.u8()) + 1) * 4096,
            timer_id: r.u32() & 0x7fff_ffff,
            library_pid: r.u32(),
            budget_ns,
            posted_ns,
            now_ns,
            alarm_sent: flags & 1 != 0 || signal == HonestSignal::Backstop,
            // A fill before this signal, at or after the entry.
            fill_signal_ns: (flags & 2 != 0)
                .then(|| posted_ns + u64::from(fill) % (now_ns - posted_ns + 1)),
            fault_ns: u64::from(r.u32() % 1_000_001),
            max_fills: u32::from(r.u8() % 4),
            amd: flags & 4 != 0,
        };
        let run = match StubRun::new(&entry, &ctx) {
            Ok(run) => run,
            Err(DriverError::UnsupportedState(_)) => return None,
            Err(e) => panic!("entering {entry:x?}: {e:?}"),
        };
        let honest = run.honest_pages(signal);
        let setup = Setup {
            entry,
            ctx,
            signal,
            honest,
        };
        Some((setup, run))
    }
}

/// Where a patch lands in the stub's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The words at the pages' start (signal, addresses, selectors, bases, timestamps...).
    Words,
    /// The honest ucontext.
    Ucontext,
    /// The honest siginfo.
    Siginfo,
    /// The honest XSAVE frame.
    Xsave,
    /// Anywhere: the offset times 2 (so that the whole 72 KiB are reached).
    Anywhere,
}

const REGIONS: [Region; 5] = [
    Region::Words,
    Region::Ucontext,
    Region::Siginfo,
    Region::Xsave,
    Region::Anywhere,
];

/// The response part of a case: raw bytes (the pages are zero but for them: the first 256 at
/// their start, the rest where the honest ucontext lies), or the honest pages with (region,
/// offset, bytes) patches applied in order.
pub type Body = crate::Body<(u8, u16, Vec<u8>)>;

impl Patch for (u8, u16, Vec<u8>) {
    fn read(r: &mut Reader<'_>) -> Self {
        let (region, off) = (r.u8(), r.u16());
        (region, off, read_patch_bytes(r))
    }
    fn write(&self, w: &mut Writer) {
        write_patch_bytes(w.u8(self.0).u16(self.1), &self.2);
    }
}

/// A stub-region case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubCase {
    /// See [`Setup::from_header`] (zero-extended to [`HEADER_LEN`]).
    pub header: Vec<u8>,
    /// The pages.
    pub body: Body,
}

impl StubCase {
    /// Decodes a case: a mode byte (odd: raw), the header, the body (patches are
    /// `region: u8, offset: u16, len - 1: u8 (low 4 bits), bytes`).
    pub fn parse(data: &[u8]) -> Self {
        let (header, body) = parse_case(data, HEADER_LEN);
        StubCase { header, body }
    }

    /// Encodes the case as fuzz input.
    pub fn encode(&self) -> Vec<u8> {
        encode_case(&self.header, HEADER_LEN, &self.body)
    }

    /// The pages this case's body makes for `setup`, and whether they are byte for byte the
    /// honest ones.
    pub fn pages(&self, setup: &Setup) -> (Vec<u8>, bool) {
        let honest = &setup.honest;
        let word = |off: usize| u64::from_le_bytes(honest[off..off + 8].try_into().unwrap());
        let in_pages = |addr: u64| (addr - setup.ctx.base - STUB) as usize;
        let uc = in_pages(word(by_stub::UC));
        let info = in_pages(word(by_stub::INFO));
        // uc_mcontext.fpstate: word 28 of the ucontext.
        let fp = in_pages(word(uc + 8 * 28));
        let mut p = match &self.body {
            Body::Raw(b) => {
                let mut p = vec![0u8; STUB_PAGES_LEN];
                let (words, frame) = b.split_at(b.len().min(0x100));
                p[..words.len()].copy_from_slice(words);
                let n = frame.len().min(STUB_PAGES_LEN - uc);
                p[uc..uc + n].copy_from_slice(&frame[..n]);
                p
            }
            Body::Patches(_) => honest.clone(),
        };
        if let Body::Patches(ps) = &self.body {
            for (region, off, bytes) in ps {
                let off = usize::from(*off);
                let at = match REGIONS[usize::from(*region) % REGIONS.len()] {
                    Region::Words => off % 0x100,
                    Region::Ucontext => uc + off % 0x200,
                    Region::Siginfo => info + off % 0x80,
                    Region::Xsave => fp + off % 0x1000,
                    Region::Anywhere => 2 * off,
                };
                for (i, &b) in bytes.iter().enumerate() {
                    p[(at + i) % STUB_PAGES_LEN] = b;
                }
            }
        }
        let same = p == *honest;
        (p, same)
    }
}
